//! Message texts. The defaults are the seeds' Indonesian texts, compiled in; a file of the same
//! name in `REMINDER_TEMPLATE_DIR` replaces one without recompiling. Templates are checked when
//! a pass starts, so a typo fails the pass with the file's name instead of failing messages.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
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

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("template {name}: {source}")]
    Syntax { name: String, source: minijinja::Error },
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
    /// The defaults, each replaced by a file of the same name in `dir` when there is one.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, default) in DEFAULTS {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => {
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                _ => default.to_string(),
            };
            env.add_template_owned(name, source)
                .map_err(|source| TemplateError::Syntax { name: name.to_string(), source })?;
        }
        Ok(Self { env })
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

    /// A dunning reminder: the "will be due" text before the due date, the overdue text after.
    pub fn dunning(&self, vars: &DunningVars, overdue: bool) -> Result<Rendered, TemplateError> {
        self.render(if overdue { "dunning_overdue" } else { "dunning_before" }, vars)
    }

    pub fn maintenance(&self, vars: &MaintenanceVars) -> Result<Rendered, TemplateError> {
        self.render("maintenance", vars)
    }
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

    #[test]
    fn a_template_naming_an_unknown_variable_fails_to_render() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("maintenance.txt"), "{{ no_such_thing }}").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let vars = MaintenanceVars {
            name: String::new(),
            plate_no: String::new(),
            visit_date: String::new(),
            days_until_visit: 0,
            sender_name: String::new(),
            service_phone: String::new(),
        };
        assert!(matches!(t.maintenance(&vars), Err(TemplateError::Render { .. })));
    }

    #[test]
    fn a_broken_template_file_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("maintenance.txt"), "{% if %}").unwrap();
        assert!(matches!(Templates::load(Some(dir.path())), Err(TemplateError::Syntax { .. })));
    }
}
