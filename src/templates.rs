//! Message texts. The defaults are the seeds' Indonesian texts, compiled in; a file of the same
//! name in `REMINDER_TEMPLATE_DIR` replaces one without recompiling. [`Templates::load`] checks
//! every template when a command starts, before the database is opened: it parses each one,
//! looks for variables no message provides, and renders it in strict mode with sample values, so
//! a typo stops the pass naming the file and line instead of failing messages one by one.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

/// The template files, with their compiled-in defaults.
const DEFAULTS: [(&str, &str); 6] = [
    ("dunning_before.txt", include_str!("../templates/dunning_before.txt")),
    ("dunning_before.subject.txt", include_str!("../templates/dunning_before.subject.txt")),
    ("dunning_overdue.txt", include_str!("../templates/dunning_overdue.txt")),
    ("dunning_overdue.subject.txt", include_str!("../templates/dunning_overdue.subject.txt")),
    ("maintenance.txt", include_str!("../templates/maintenance.txt")),
    ("maintenance.subject.txt", include_str!("../templates/maintenance.subject.txt")),
];

/// The variables of [`DunningVars`], in the order the README lists them.
pub const DUNNING_VARIABLES: [&str; 10] = [
    "name",
    "invoice_number",
    "amount",
    "amount_value",
    "due_date",
    "stage",
    "days_left",
    "days_overdue",
    "sender_name",
    "service_phone",
];

/// The variables of [`MaintenanceVars`], in the order the README lists them.
pub const MAINTENANCE_VARIABLES: [&str; 6] =
    ["name", "plate_no", "visit_date", "days_until_visit", "sender_name", "service_phone"];

/// What a scheduled message's text (body or caption) can use: its contact's fields.
pub const SCHEDULED_VARIABLES: [&str; 6] =
    ["name", "phone", "email", "telegram_chat_id", "sender_name", "service_phone"];

/// The contact's fields, for a scheduled message's text.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContactVars {
    pub name: String,
    pub phone: String,
    pub email: String,
    pub telegram_chat_id: String,
    pub sender_name: String,
    pub service_phone: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("REMINDER_TEMPLATE_DIR: {} {problem}", path.display())]
    Dir { path: PathBuf, problem: String },
    #[error("cannot read template {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// A template that cannot work: `file` is the override's path, or the name of a built-in.
    #[error("template {file}{}: {problem}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid { file: String, line: Option<usize>, problem: String },
    #[error("cannot render {name}: {source}")]
    Render { name: String, source: minijinja::Error },
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// What a dunning text can use.
#[derive(Debug, Clone, Serialize)]
pub struct DunningVars {
    pub name: String,
    pub invoice_number: String,
    /// `Rp 150.000`
    pub amount: String,
    pub amount_value: i64,
    /// `18 November 2025`
    pub due_date: String,
    pub stage: String,
    pub days_left: i64,
    pub days_overdue: i64,
    pub sender_name: String,
    pub service_phone: String,
}

/// What a maintenance text can use.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceVars {
    pub name: String,
    pub plate_no: String,
    /// `18-12-2025`, as seed 002 writes it.
    pub visit_date: String,
    pub days_until_visit: i64,
    pub sender_name: String,
    pub service_phone: String,
}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The defaults, each replaced by a file of the same name in `dir` when there is one, all
    /// checked (see the module comment). A `dir` that does not exist is an error.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        if let Some(dir) = dir {
            let problem = match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => None,
                Ok(_) => Some("is not a directory".to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some("does not exist".to_string())
                }
                Err(e) => Some(format!("cannot be read: {e}")),
            };
            if let Some(problem) = problem {
                return Err(TemplateError::Dir { path: dir.to_path_buf(), problem });
            }
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Debug info gives errors the span of the failing expression.
        env.set_debug(true);
        let mut shown = Vec::new();
        for (name, default) in DEFAULTS {
            let (file, source) = match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => {
                    let source = std::fs::read_to_string(&path)
                        .map_err(|source| TemplateError::Read { path: path.clone(), source })?;
                    (path.display().to_string(), source)
                }
                _ => (format!("{name} (built in)"), default.to_string()),
            };
            env.add_template_owned(name, source).map_err(|e| TemplateError::Invalid {
                file: file.clone(),
                line: e.line(),
                problem: describe(&e),
            })?;
            shown.push((name, file));
        }
        let templates = Self { env };
        for (name, file) in &shown {
            templates.check(name, file)?;
        }
        Ok(templates)
    }

    /// One template against the variables its messages provide: undeclared names first (they
    /// may hide in a branch the samples do not take), then strict renders with two samples that
    /// take both sides of the usual `{% if sender_name %}`.
    fn check(&self, name: &str, file: &str) -> Result<(), TemplateError> {
        let invalid = |line: Option<usize>, problem: String| TemplateError::Invalid {
            file: file.to_string(),
            line,
            problem,
        };
        let template = self.env.get_template(name).map_err(|e| invalid(e.line(), describe(&e)))?;
        let known: &[&str] = if name.starts_with("maintenance") {
            &MAINTENANCE_VARIABLES
        } else {
            &DUNNING_VARIABLES
        };
        let globals: Vec<&str> = self.env.globals().map(|(g, _)| g).collect();
        let source = template.source();
        let mut unknown: Vec<(Option<usize>, String)> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !known.contains(&v.as_str()) && !globals.contains(&v.as_str()))
            .map(|v| (find_variable(source, &v), v))
            .collect();
        unknown.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
        if let Some((line, variable)) = unknown.into_iter().next() {
            return Err(invalid(
                line,
                format!(
                    "undefined variable '{}' (known: {})",
                    crate::report::escape_control(&variable),
                    known.join(", ")
                ),
            ));
        }
        let samples = if name.starts_with("maintenance") {
            maintenance_samples().map(|s| minijinja::Value::from_serialize(&s))
        } else {
            dunning_samples().map(|s| minijinja::Value::from_serialize(&s))
        };
        for (i, sample) in samples.iter().enumerate() {
            let rendered = template.render(sample).map_err(|e| invalid(e.line(), describe(&e)))?;
            if i == 0 && !name.ends_with(".subject.txt") && rendered.trim().is_empty() {
                return Err(invalid(None, "renders an empty message".into()));
            }
        }
        Ok(())
    }

    /// Files in `dir` that are not template names, with what they may have been meant as: they
    /// are ignored, which is worth a warning.
    pub fn unknown_files(dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut unknown: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| !f.starts_with('.') && !DEFAULTS.iter().any(|(name, _)| name == f))
            .collect();
        unknown.sort();
        unknown
    }

    /// The template file names, for messages about files that are not one of them.
    pub fn names() -> impl Iterator<Item = &'static str> {
        DEFAULTS.iter().map(|(name, _)| *name)
    }

    fn render(&self, base: &str, vars: impl Serialize) -> Result<Rendered, TemplateError> {
        let one = |name: String| {
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&vars))
                .map(|s| s.trim().to_string())
                .map_err(|source| TemplateError::Render { name, source })
        };
        Ok(Rendered {
            subject: one(format!("{base}.subject.txt"))?,
            body: one(format!("{base}.txt"))?,
        })
    }

    /// Checks a scheduled message's text before it is stored: it must parse, name only the
    /// contact's fields, and render. The error says what is wrong and what is known.
    pub fn check_text(&self, text: &str) -> Result<(), String> {
        if !has_tags(text) {
            return Ok(());
        }
        let template = self.env.template_from_str(text).map_err(|e| describe_at(&e))?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !SCHEDULED_VARIABLES.contains(&v.as_str()))
            .collect();
        unknown.sort();
        if let Some(v) = unknown.first() {
            return Err(format!(
                "undefined variable '{}' (known: {})",
                crate::report::escape_control(v),
                SCHEDULED_VARIABLES.join(", ")
            ));
        }
        template.render(ContactVars::default()).map(|_| ()).map_err(|e| describe_at(&e))
    }

    /// A scheduled message's text for its contact. A text written into the table directly with
    /// an unknown variable is an error naming it (the message fails with that reason).
    pub fn render_text(&self, text: &str, vars: &ContactVars) -> Result<String, String> {
        if !has_tags(text) {
            return Ok(text.to_string());
        }
        self.check_text(text)?;
        self.env.render_str(text, vars).map_err(|e| describe_at(&e))
    }

    /// A dunning reminder: the "will be due" text before the due date, the overdue text after.
    pub fn dunning(&self, vars: &DunningVars, overdue: bool) -> Result<Rendered, TemplateError> {
        self.render(if overdue { "dunning_overdue" } else { "dunning_before" }, vars)
    }

    pub fn maintenance(&self, vars: &MaintenanceVars) -> Result<Rendered, TemplateError> {
        self.render("maintenance", vars)
    }
}

/// Whether a text uses the template language at all; most scheduled texts do not.
fn has_tags(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// A minijinja error with its line, for a text that is not a file.
fn describe_at(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) if line > 1 => format!("line {line}: {}", describe(e)),
        _ => describe(e),
    }
}

/// A minijinja error as a reason, without its `(in file:line)`: the caller names both.
fn describe(e: &minijinja::Error) -> String {
    let detail = e.detail().unwrap_or_default();
    let named = |prefix: &str| {
        let name = detail.strip_prefix(prefix).and_then(|d| d.strip_suffix(" is unknown"));
        name.map(|n| crate::report::escape_control(n).into_owned())
    };
    match e.kind() {
        ErrorKind::UnknownFilter => match named("filter ") {
            Some(f) => format!("unknown filter '{f}'"),
            None => format!("unknown filter ({detail})"),
        },
        ErrorKind::UnknownTest => match named("test ") {
            Some(t) => format!("unknown test '{t}'"),
            None => format!("unknown test ({detail})"),
        },
        ErrorKind::UnknownFunction => match named("") {
            Some(f) => format!("unknown function '{f}'"),
            None => format!("unknown function ({detail})"),
        },
        ErrorKind::UndefinedError => {
            let span = e.range().and_then(|r| e.template_source().and_then(|s| s.get(r)));
            match span {
                Some(expr) => {
                    format!("'{}' is undefined", crate::report::escape_control(expr.trim()))
                }
                None => "undefined value".to_string(),
            }
        }
        kind if detail.is_empty() => kind.to_string(),
        kind => format!("{kind}: {}", crate::report::escape_control(detail)),
    }
}

/// The line of the first use of `variable` inside a `{{ … }}` or `{% … %}` tag, skipping
/// string literals, attribute names (`x.variable`), comments and `{% raw %}` blocks.
fn find_variable(source: &str, variable: &str) -> Option<usize> {
    let line_of = |pos: usize| 1 + source[..pos].matches('\n').count();
    let mut pos = 0;
    let mut in_raw = false;
    while let Some(open) = source[pos..].find('{').map(|i| pos + i) {
        let close = match source.get(open + 1..open + 2) {
            Some("{") => "}}",
            Some("%") => "%}",
            Some("#") => "#}",
            _ => {
                pos = open + 1;
                continue;
            }
        };
        let start = open + 2;
        let end = source[start..].find(close).map(|i| start + i)?;
        pos = end + 2;
        let tag = &source[start..end];
        let word = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        if close == "%}" && (word == "raw" || word == "endraw") {
            in_raw = word == "raw";
            continue;
        }
        if close == "#}" || in_raw {
            continue;
        }
        let bytes = tag.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c == b'"' || c == b'\'' {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let from = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let after_dot = tag[..from].trim_end().ends_with('.');
                if &tag[from..i] == variable && !after_dot {
                    return Some(line_of(start + from));
                }
            } else {
                i += 1;
            }
        }
    }
    None
}

/// Sample values for the start-up check: every variable set and truthy, then every one empty.
fn dunning_samples() -> [DunningVars; 2] {
    [
        DunningVars {
            name: "Budi Santoso".into(),
            invoice_number: "INV-20251115-123456".into(),
            amount: "Rp 150.000".into(),
            amount_value: 150_000,
            due_date: "18 November 2025".into(),
            stage: "T-3".into(),
            days_left: 3,
            days_overdue: 6,
            sender_name: "Tim Wikarta Provider".into(),
            service_phone: "087740659525".into(),
        },
        DunningVars {
            name: String::new(),
            invoice_number: String::new(),
            amount: String::new(),
            amount_value: 0,
            due_date: String::new(),
            stage: String::new(),
            days_left: 0,
            days_overdue: 0,
            sender_name: String::new(),
            service_phone: String::new(),
        },
    ]
}

fn maintenance_samples() -> [MaintenanceVars; 2] {
    [
        MaintenanceVars {
            name: "Budi Santoso".into(),
            plate_no: "B 1234 ABC".into(),
            visit_date: "18-12-2025".into(),
            days_until_visit: 2,
            sender_name: "Tim Wikarta Provider".into(),
            service_phone: "087740659525".into(),
        },
        MaintenanceVars {
            name: String::new(),
            plate_no: String::new(),
            visit_date: String::new(),
            days_until_visit: 0,
            sender_name: String::new(),
            service_phone: String::new(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dunning_vars() -> DunningVars {
        DunningVars {
            name: "Budi Santoso".into(),
            invoice_number: "INV-20251115-123456".into(),
            amount: "Rp 150.000".into(),
            amount_value: 150_000,
            due_date: "18 November 2025".into(),
            stage: "T-3".into(),
            days_left: 3,
            days_overdue: 0,
            sender_name: "Tim Wikarta Provider".into(),
            service_phone: String::new(),
        }
    }

    #[test]
    fn a_scheduled_text_may_use_the_contacts_fields_and_nothing_else() {
        let t = Templates::load(None).unwrap();
        let vars = ContactVars { name: "Budi".into(), ..ContactVars::default() };
        assert_eq!(t.render_text("Halo {{ name }}!", &vars).unwrap(), "Halo Budi!");
        assert_eq!(t.render_text("Harga {100}", &vars).unwrap(), "Harga {100}");
        let e = t.check_text("Halo {{ nama_pelanggan }}").unwrap_err();
        assert!(e.contains("'nama_pelanggan'") && e.contains("known: name, phone"), "{e}");
        assert!(t.render_text("Halo {{ nama }}", &vars).unwrap_err().contains("'nama'"));
        assert!(t.check_text("{% if %}").is_err());
        assert!(t.check_text("{{ name | titel }}").unwrap_err().contains("titel"));
    }

    #[test]
    fn dunning_text_is_seed_003s_text() {
        let t = Templates::load(None).unwrap();
        let r = t.dunning(&dunning_vars(), false).unwrap();
        assert_eq!(r.subject, "Pengingat Pembayaran Tagihan INV-20251115-123456 🕒");
        assert_eq!(
            r.body,
            "Halo Budi Santoso,\n\nKami ingin mengingatkan bahwa tagihan INV-20251115-123456 \
             sebesar Rp 150.000 akan jatuh tempo pada 18 November 2025.\nMohon segera \
             menyelesaikan pembayaran agar layanan Anda tetap aktif tanpa gangguan.\n\nJika Anda \
             sudah melakukan pembayaran, abaikan pesan ini.\nTerima kasih atas kerja sama dan \
             kepercayaannya.\n\nSalam,\nTim Wikarta Provider"
        );
    }

    #[test]
    fn maintenance_text_is_seed_002s_text() {
        let t = Templates::load(None).unwrap();
        let r = t
            .maintenance(&MaintenanceVars {
                name: "Budi Santoso".into(),
                plate_no: "B 1234 ABC".into(),
                visit_date: "18-12-2025".into(),
                days_until_visit: 1,
                sender_name: String::new(),
                service_phone: "087740659525".into(),
            })
            .unwrap();
        assert_eq!(
            r.body,
            "Bapak Budi Santoso untuk nomor kendaraan B 1234 ABC sebentar lagi tiba saat \
             pemeliharaan rutin pada tanggal 18-12-2025, daftarkan segera melalui nomor \
             pelayanan kami 087740659525"
        );
    }

    #[test]
    fn a_file_in_the_template_dir_replaces_the_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dunning_overdue.txt"), "Bayar {{ invoice_number }}!")
            .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(t.dunning(&dunning_vars(), true).unwrap().body, "Bayar INV-20251115-123456!");
    }

    /// Loads a template dir holding `files`, and returns the error's text.
    fn load_error(files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let e = Templates::load(Some(dir.path())).err().expect("the templates were accepted");
        // The path is the temp dir's; the rest is what the operator reads.
        e.to_string().replace(&format!("{}/", dir.path().display()), "")
    }

    #[test]
    fn the_built_in_templates_pass_the_check() {
        assert!(Templates::load(None).is_ok());
    }

    #[test]
    fn an_unknown_variable_names_file_line_and_the_known_ones() {
        let e = load_error(&[(
            "dunning_before.txt",
            "Halo {{ name }},\n\nTagihan {{ nama_pelanggan }} sebesar {{ amount }}",
        )]);
        assert_eq!(
            e,
            "template dunning_before.txt line 3: undefined variable 'nama_pelanggan' (known: name, \
             invoice_number, amount, amount_value, due_date, stage, days_left, days_overdue, \
             sender_name, service_phone)"
        );
    }

    #[test]
    fn an_unknown_variable_in_a_branch_the_samples_skip_is_found() {
        let e = load_error(&[(
            "maintenance.txt",
            "{{ name }}\n{% if days_until_visit > 100 %}\n{{ \"plat\" }} {{ plat }}{% endif %}",
        )]);
        assert!(e.starts_with("template maintenance.txt line 3: undefined variable 'plat'"), "{e}");
    }

    #[test]
    fn a_variable_of_the_other_kind_of_message_is_unknown() {
        let e = load_error(&[("maintenance.subject.txt", "Servis {{ invoice_number }}")]);
        assert!(e.contains("line 1: undefined variable 'invoice_number'"), "{e}");
        assert!(e.contains("(known: name, plate_no, visit_date, "), "{e}");
    }

    #[test]
    fn an_unknown_filter_is_an_error_naming_it() {
        let e = load_error(&[("dunning_overdue.txt", "Halo\n{{ name|titel }}")]);
        assert_eq!(e, "template dunning_overdue.txt line 2: unknown filter 'titel'");
    }

    #[test]
    fn an_unknown_filter_behind_the_empty_sample_branch_is_found() {
        let e = load_error(&[(
            "dunning_before.txt",
            "Halo{% if not sender_name %}\n{{ name|upperr }}{% endif %}",
        )]);
        assert_eq!(e, "template dunning_before.txt line 2: unknown filter 'upperr'");
    }

    #[test]
    fn an_undefined_attribute_is_an_error() {
        let e = load_error(&[("maintenance.txt", "{{ name.first }}")]);
        assert_eq!(e, "template maintenance.txt line 1: 'name.first' is undefined");
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let e = load_error(&[("maintenance.txt", "Bapak {{ name }}\n{% if %}")]);
        assert!(e.starts_with("template maintenance.txt line 2: syntax error: "), "{e}");
    }

    #[test]
    fn an_empty_override_is_an_error() {
        let e = load_error(&[("maintenance.txt", "{% if false %}x{% endif %}\n")]);
        assert_eq!(e, "template maintenance.txt: renders an empty message");
    }

    #[test]
    fn a_template_dir_that_does_not_exist_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tempaltes");
        let e = Templates::load(Some(&missing)).err().unwrap().to_string();
        assert_eq!(e, format!("REMINDER_TEMPLATE_DIR: {} does not exist", missing.display()));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = Templates::load(Some(&file)).err().unwrap().to_string();
        assert!(e.ends_with("is not a directory"), "{e}");
    }

    #[test]
    fn files_that_are_not_template_names_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["dunning_before.txt", "dunning_before.text", ".gitkeep", "notes.md"] {
            std::fs::write(dir.path().join(f), "Halo {{ name }}").unwrap();
        }
        assert_eq!(Templates::unknown_files(dir.path()), ["dunning_before.text", "notes.md"]);
    }

    #[test]
    fn the_variable_lists_match_what_messages_provide() {
        let keys = |v: serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let sorted = |names: &[&str]| {
            let mut n: Vec<String> = names.iter().map(|s| (*s).to_string()).collect();
            n.sort();
            n
        };
        let [dunning, _] = dunning_samples();
        assert_eq!(keys(serde_json::to_value(dunning).unwrap()), sorted(&DUNNING_VARIABLES));
        let [maintenance, _] = maintenance_samples();
        assert_eq!(
            keys(serde_json::to_value(maintenance).unwrap()),
            sorted(&MAINTENANCE_VARIABLES)
        );
    }

    #[test]
    fn a_variable_is_found_only_where_it_is_used_as_one() {
        let source = "nama {# {{ nama }} #}\n{{ x.nama }} {{ 'nama' }}\n{% raw %}{{ nama }}\
                      {% endraw %}\n{{ y | default(nama) }}";
        assert_eq!(find_variable(source, "nama"), Some(4));
        assert_eq!(find_variable("{{ name }}", "nama"), None);
    }
}
