//! Just before a claimed message goes out: re-check it against its subject as it is now (paid,
//! moved, stage over, opted out), render its text and address it. Pure: the claim brought every
//! value this needs, each decoded on its own, so a bad value fails only its own message.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::policy::{self, Attempting};
use crate::channels::OutboundMessage;
use crate::domain::channel::{first_group, ChannelKind};
use crate::domain::dunning::DunningPolicy;
use crate::domain::outbox::{Kind, Resolution, RetryCause};
use crate::domain::{format, phone};
use crate::store::{
    BadValue, Cell, Claimed, ClaimedRow, ContactRow, InvoiceRow, ScheduledRow, VehicleRow,
};
use crate::templates::{ContactVars, DunningVars, MaintenanceVars, Rendered, Templates};

/// Longest text any channel is handed; a longer one is a data error, not a message.
pub const MAX_BODY_CHARS: usize = 65_536;

/// What preparing needs besides the message.
pub struct Rules<'a> {
    pub templates: &'a Templates,
    pub dunning: &'a DunningPolicy,
    pub max_attempts: u32,
    pub sender_name: &'a str,
    pub service_phone: &'a str,
    pub timezone: Tz,
}

/// A message ready for its provider.
#[derive(Debug, Clone)]
pub struct Job {
    pub row: ClaimedRow,
    pub message: OutboundMessage,
    /// The text rendered now, to keep on the row (rows that carry their text keep it).
    pub rendered: bool,
    /// The contact's channel preference, for fallback after the send.
    pub preference: Option<String>,
}

impl Job {
    pub fn attempting(&self) -> Attempting<'_> {
        Attempting {
            kind: self.row.kind,
            channel: self.row.channel,
            attempts: self.row.attempts,
            preference: self.preference.as_deref(),
        }
    }
}

/// The outcome of preparing: decided without a request, or ready to send.
#[derive(Debug, Clone)]
pub enum Prepared {
    Done(Resolution),
    Send(Box<Job>),
}

fn value<T>(cell: &Cell<T>) -> Result<Option<T>, Resolution>
where
    T: Clone,
{
    cell.clone().map_err(|bad| bad_value(&bad))
}

fn bad_value(bad: &BadValue) -> Resolution {
    Resolution::Failed { reason: bad.to_string(), fallback: None }
}

/// Who and what a claimed message is about, for the report.
pub fn about(claimed: &Claimed, today: NaiveDate, body: Option<&str>) -> crate::report::About {
    let row = claimed.row.as_ref().ok();
    let ok = |cell: &Cell<String>| cell.clone().ok().flatten();
    let date = row.and_then(|r| r.event_date);
    let days = date.map(|d| (d - today).num_days());
    crate::report::About {
        contact_id: claimed.contact.as_ref().map(|c| c.id).or(row.and_then(|r| r.contact_id)),
        contact_name: claimed.contact.as_ref().and_then(|c| ok(&c.name)),
        invoice_number: claimed.invoice.as_ref().and_then(|i| ok(&i.number)),
        amount: claimed.invoice.as_ref().and_then(|i| i.amount.clone().ok().flatten()),
        plate_no: claimed.vehicle.as_ref().and_then(|v| ok(&v.plate_no)),
        date,
        days_left: days.map(|d| d.max(0)),
        days_overdue: days.map(|d| (-d).max(0)),
        scheduled_message_id: claimed.scheduled.as_ref().map(|s| s.id),
        body: body.map(str::to_string),
    }
}

/// Re-checks and renders one claimed message as of `now` (business clock).
pub fn prepare(claimed: &Claimed, rules: &Rules<'_>, now: DateTime<Utc>) -> Prepared {
    match try_prepare(claimed, rules, now) {
        Ok(job) => Prepared::Send(Box::new(job)),
        Err(resolution) => Prepared::Done(resolution),
    }
}

fn try_prepare(
    claimed: &Claimed,
    rules: &Rules<'_>,
    now: DateTime<Utc>,
) -> Result<Job, Resolution> {
    let today = now.with_timezone(&rules.timezone).date_naive();
    let row = match &claimed.row {
        Ok(row) => row,
        Err((_, reason)) => {
            return Err(Resolution::Failed { reason: reason.clone(), fallback: None })
        }
    };
    // Each expired lease is a pass that died holding this message, possibly mid-request. Past
    // the attempt budget it is not sent again: a message that keeps killing its pass must not
    // loop, and every one of those passes may have delivered it.
    if row.expired_leases >= rules.max_attempts as i32 {
        return Err(Resolution::Failed {
            reason: format!(
                "outcome unknown: {} passes stopped while delivering it (killed or lost their \
                 database) without recording an answer; the provider may or may not have received \
                 it, so it is not sent again",
                row.expired_leases
            ),
            fallback: None,
        });
    }
    if row.kind == Kind::Test {
        // Addressed and written when queued by a test command; no contact behind it.
        let recipient = row.recipient.clone().ok_or_else(|| Resolution::Failed {
            reason: "the test message has no recipient".into(),
            fallback: None,
        })?;
        return Ok(Job {
            row: row.clone(),
            message: OutboundMessage {
                id: row.id,
                recipient,
                subject: row.subject.clone(),
                body: row.body.clone().unwrap_or_default(),
                media_url: row.media_url.clone(),
            },
            rendered: false,
            preference: None,
        });
    }
    let Some(contact) = &claimed.contact else {
        let who = row.contact_id.map_or_else(|| "(none)".to_string(), |id| id.to_string());
        return Err(Resolution::Failed {
            reason: format!("contact {who} not found"),
            fallback: None,
        });
    };
    // A scheduled message falls back along its own channel spec; a rule's along the contact's.
    let preference = match (&claimed.scheduled, row.kind) {
        (Some(s), Kind::Scheduled) => value(&s.channel)?,
        _ => value(&contact.channels)?,
    };
    let attempting = Attempting {
        kind: row.kind,
        channel: row.channel,
        attempts: row.attempts,
        preference: preference.as_deref(),
    };
    if contact.opted_out {
        return Err(Resolution::Skipped { reason: "contact opted out".into(), fallback: None });
    }
    let name = value(&contact.name)?.unwrap_or_default();
    let mut media_url = row.media_url.clone();
    let (rendered, was_rendered) = match row.kind {
        Kind::Dunning => (dunning(claimed, row, rules, today, name)?, true),
        Kind::Maintenance => (maintenance(claimed, row, rules, today, name)?, true),
        Kind::Scheduled => {
            let Some(scheduled) = &claimed.scheduled else {
                return Err(cancelled("the scheduled message was deleted"));
            };
            let (body, media) = scheduled_text(scheduled, row, contact, rules, now, &attempting)?;
            media_url = media;
            (Rendered { subject: row.subject.clone().unwrap_or_default(), body }, true)
        }
        Kind::Test => (
            Rendered {
                subject: row.subject.clone().unwrap_or_default(),
                body: row.body.clone().unwrap_or_default(),
            },
            false,
        ),
    };
    if rendered.body.trim().is_empty() && media_url.is_none() {
        return Err(Resolution::Failed { reason: "the message is empty".into(), fallback: None });
    }
    let length = rendered.body.chars().count();
    if length > MAX_BODY_CHARS {
        return Err(Resolution::Failed { reason: too_long(claimed, row, length), fallback: None });
    }
    let recipient = match address(contact, row.channel) {
        Ok(r) => r,
        Err(Unusable::Missing(what)) => {
            return Err(policy::skipped(attempting, format!("contact has no {what}")))
        }
        Err(Unusable::Invalid(why)) => return Err(policy::failed(attempting, why)),
        Err(Unusable::Bad(bad)) => return Err(bad_value(&bad)),
    };
    Ok(Job {
        row: row.clone(),
        message: OutboundMessage {
            id: row.id,
            recipient,
            subject: (!rendered.subject.is_empty()).then_some(rendered.subject),
            body: rendered.body,
            media_url,
        },
        rendered: was_rendered,
        preference,
    })
}

/// A scheduled message as its row is now: cancelled or deleted after it was queued means it is
/// not sent; a one-off moved later waits; a changed channel carries it to the new one; the body,
/// caption and media sent are the current ones, with the contact's fields filled in.
fn scheduled_text(
    s: &ScheduledRow,
    row: &ClaimedRow,
    contact: &ContactRow,
    rules: &Rules<'_>,
    now: DateTime<Utc>,
    attempting: &Attempting<'_>,
) -> Result<(String, Option<String>), Resolution> {
    let status = value(&s.status)?.unwrap_or_default();
    if status == "cancelled" {
        return Err(cancelled("the scheduled message was cancelled"));
    }
    let recurrence = value(&s.recurrence)?.unwrap_or_default();
    if matches!(recurrence.trim(), "" | "none") {
        if let Some(at) = value(&s.scheduled_at)? {
            if at > now {
                return Err(Resolution::Retry {
                    at,
                    reason: format!(
                        "moved to {}; it waits for its new time",
                        at.with_timezone(&rules.timezone).format("%Y-%m-%d %H:%M")
                    ),
                    cause: RetryCause::Rescheduled,
                });
            }
        }
    }
    let spec = value(&s.channel)?.filter(|c| !c.trim().is_empty());
    let group = first_group(spec.as_deref().unwrap_or("whatsapp"));
    if !group.contains(&row.channel) {
        let shown = crate::store::shown(spec.as_deref().unwrap_or(""));
        return Err(Resolution::Skipped {
            reason: format!("the scheduled message's channel changed to '{shown}'"),
            fallback: group.first().copied().filter(|_| attempting.kind != Kind::Test),
        });
    }
    let body = value(&s.body)?.filter(|b| !b.trim().is_empty());
    let caption = value(&s.caption)?.filter(|c| !c.trim().is_empty());
    let media = value(&s.media_url)?.filter(|m| !m.trim().is_empty());
    let text = body.or(caption).unwrap_or_default();
    let vars = ContactVars {
        name: value(&contact.name)?.unwrap_or_default(),
        phone: value(&contact.phone)?.unwrap_or_default(),
        email: value(&contact.email)?.unwrap_or_default(),
        telegram_chat_id: value(&contact.telegram_chat_id)?.unwrap_or_default(),
        sender_name: rules.sender_name.to_string(),
        service_phone: rules.service_phone.to_string(),
    };
    let body = rules.templates.render_text(&text, &vars).map_err(|e| Resolution::Failed {
        reason: format!("scheduled_messages {} body: {e}", s.id),
        fallback: None,
    })?;
    Ok((body, media))
}

/// Why a message of `length` characters cannot go out: the input value that makes up most of
/// it, named as a bad value is (`contacts 12 name: …`), or else the message as a whole (a
/// template that long).
fn too_long(claimed: &Claimed, row: &ClaimedRow, length: usize) -> String {
    let mut inputs: Vec<(&'static str, i64, &'static str, &str)> = Vec::new();
    if let Some(ContactRow { id, name: Ok(Some(name)), .. }) = &claimed.contact {
        inputs.push(("contacts", *id, "name", name));
    }
    match row.kind {
        Kind::Dunning => {
            if let Some(InvoiceRow { id, number: Ok(Some(n)), .. }) = &claimed.invoice {
                inputs.push(("invoices", *id, "number", n));
            }
        }
        Kind::Maintenance => {
            if let Some(VehicleRow { id, plate_no: Ok(Some(p)), .. }) = &claimed.vehicle {
                inputs.push(("vehicles", *id, "plate_no", p));
            }
        }
        // The text is the scheduled message's as it is now: its body, or else its caption.
        Kind::Scheduled => {
            if let Some(s) = &claimed.scheduled {
                match (&s.body, &s.caption) {
                    (Ok(Some(body)), _) if !body.trim().is_empty() => {
                        inputs.push(("scheduled_messages", s.id, "body", body));
                    }
                    (_, Ok(Some(caption))) => {
                        inputs.push(("scheduled_messages", s.id, "caption", caption));
                    }
                    _ => {}
                }
            }
        }
        Kind::Test => {}
    }
    let culprit = inputs
        .into_iter()
        .map(|(table, id, column, value)| (table, id, column, value, value.chars().count()))
        .max_by_key(|input| input.4)
        .filter(|input| input.4 > length - input.4);
    match culprit {
        Some((table, id, column, value, chars)) => BadValue::new(
            table,
            id,
            column,
            value,
            format!(
                "'{}' is {chars} characters long; the message made from it would be {length}, \
                 more than any channel carries ({MAX_BODY_CHARS})",
                crate::store::shown(value)
            ),
        )
        .to_string(),
        None => format!(
            "the message is {length} characters long, more than any channel carries \
             ({MAX_BODY_CHARS}); check the template and the data it is made from"
        ),
    }
}

fn cancelled(reason: impl Into<String>) -> Resolution {
    Resolution::Cancelled { reason: reason.into() }
}

fn dunning(
    claimed: &Claimed,
    row: &ClaimedRow,
    rules: &Rules<'_>,
    today: NaiveDate,
    name: String,
) -> Result<Rendered, Resolution> {
    let Some(invoice) = &claimed.invoice else {
        return Err(cancelled("the invoice no longer exists"));
    };
    let status = value(&invoice.status)?.unwrap_or_default();
    if status != "unpaid" {
        return Err(cancelled(format!("invoice is {status}")));
    }
    let Some(due) = value(&invoice.due_date)? else {
        return Err(Resolution::Failed {
            reason: format!("invoices {} due_date is empty", invoice.id),
            fallback: None,
        });
    };
    if row.event_date != Some(due) {
        return Err(cancelled(format!("the invoice's due date changed to {due}")));
    }
    let current = rules.dunning.current_stage(due, today);
    let stage = row.stage.clone().unwrap_or_default();
    if current.as_ref().map(|s| s.name.as_str()) != Some(stage.as_str()) {
        let now_stage = current.map_or_else(|| "none".to_string(), |s| s.name);
        return Err(cancelled(format!("stage {stage} is over (current stage: {now_stage})")));
    }
    let days = (today - due).num_days();
    let amount = value(&invoice.amount)?.unwrap_or(0);
    let number = value(&invoice.number)?
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("#{}", invoice.id));
    rules
        .templates
        .dunning(
            &DunningVars {
                name,
                invoice_number: number,
                amount: format::rupiah(amount),
                amount_value: amount,
                due_date: format::tanggal(due),
                stage,
                days_left: (-days).max(0),
                days_overdue: days.max(0),
                sender_name: rules.sender_name.to_string(),
                service_phone: rules.service_phone.to_string(),
            },
            days > 0,
        )
        .map_err(|e| Resolution::Failed { reason: e.to_string(), fallback: None })
}

fn maintenance(
    claimed: &Claimed,
    row: &ClaimedRow,
    rules: &Rules<'_>,
    today: NaiveDate,
    name: String,
) -> Result<Rendered, Resolution> {
    let Some(vehicle) = &claimed.vehicle else {
        return Err(cancelled("the vehicle no longer exists"));
    };
    let visit = value(&vehicle.visit_date)?;
    if visit.is_none() || visit != row.event_date {
        let now = visit.map_or_else(|| "none".to_string(), |d| d.to_string());
        return Err(cancelled(format!("the vehicle's visit date changed to {now}")));
    }
    let visit = visit.unwrap_or(today);
    let plate_no = value(&vehicle.plate_no)?.unwrap_or_default();
    rules
        .templates
        .maintenance(&MaintenanceVars {
            name,
            plate_no,
            visit_date: format::dd_mm_yyyy(visit),
            days_until_visit: (visit - today).num_days(),
            sender_name: rules.sender_name.to_string(),
            service_phone: rules.service_phone.to_string(),
        })
        .map_err(|e| Resolution::Failed { reason: e.to_string(), fallback: None })
}

enum Unusable {
    /// The contact has no address for this channel (skipped).
    Missing(&'static str),
    /// The address is there but unusable (failed, with the reason).
    Invalid(String),
    /// The column holds a value that is not text.
    Bad(BadValue),
}

/// The contact's address on `channel`, normalized.
fn address(c: &ContactRow, channel: ChannelKind) -> Result<String, Unusable> {
    let present = |cell: &Cell<String>| match cell {
        Ok(v) => Ok(v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)),
        Err(bad) => Err(Unusable::Bad(bad.clone())),
    };
    match channel {
        ChannelKind::WhatsApp => {
            let raw = present(&c.phone)?.ok_or(Unusable::Missing("phone number"))?;
            phone::normalize(&raw).map_err(|e| Unusable::Invalid(e.to_string()))
        }
        ChannelKind::Telegram => {
            let chat =
                present(&c.telegram_chat_id)?.ok_or(Unusable::Missing("Telegram chat id"))?;
            if is_chat_id(&chat) {
                Ok(chat)
            } else {
                Err(Unusable::Invalid(format!(
                    "invalid Telegram chat id '{}': a chat id is a number (e.g. 123456789 or \
                     -1001234567890) or a @channelname",
                    crate::store::shown(&chat)
                )))
            }
        }
        ChannelKind::Email => {
            let email = present(&c.email)?.ok_or(Unusable::Missing("email address"))?;
            if email.contains('@') && !email.contains(char::is_whitespace) && email.len() <= 320 {
                Ok(email)
            } else {
                Err(Unusable::Invalid(format!(
                    "invalid email address '{}'",
                    crate::store::shown(&email)
                )))
            }
        }
    }
}

/// What the Bot API takes as `chat_id`: a whole number (negative for groups and channels), or a
/// public channel's `@username`.
fn is_chat_id(chat: &str) -> bool {
    let digits = chat.strip_prefix('-').unwrap_or(chat);
    let number =
        !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit());
    let username = chat.strip_prefix('@').is_some_and(|u| {
        !u.is_empty() && u.len() <= 32 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    number || username
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn contact() -> ContactRow {
        ContactRow {
            id: 1,
            name: Ok(Some("Budi".into())),
            phone: Ok(Some("0812-3456-7890".into())),
            email: Ok(Some("budi@example.com".into())),
            telegram_chat_id: Ok(None),
            channels: Ok(Some("whatsapp,email".into())),
            opted_out: false,
        }
    }

    /// A T-3 dunning message (id 7) of invoice INV-1, Rp 150.000, due on `due`.
    pub(crate) fn dunning_message(due: &str) -> Claimed {
        Claimed {
            row: Ok(ClaimedRow {
                id: 7,
                kind: Kind::Dunning,
                subject_id: Some(3),
                stage: Some("T-3".into()),
                event_date: Some(d(due)),
                channel: ChannelKind::WhatsApp,
                subject: None,
                body: None,
                media_url: None,
                recipient: None,
                attempts: 0,
                expired_leases: 0,
                contact_id: Some(1),
                connection: None,
            }),
            contact: Some(contact()),
            invoice: Some(InvoiceRow {
                id: 3,
                number: Ok(Some("INV-1".into())),
                amount: Ok(Some(150_000)),
                due_date: Ok(Some(d(due))),
                status: Ok(Some("unpaid".into())),
            }),
            vehicle: None,
            scheduled: None,
        }
    }

    fn run(c: &Claimed, today: &str) -> Prepared {
        let templates = Templates::load(None).unwrap();
        let dunning = DunningPolicy::new("7,3,1", 3, 4).unwrap();
        let rules = Rules {
            templates: &templates,
            dunning: &dunning,
            max_attempts: 3,
            sender_name: "Tim",
            service_phone: "",
            timezone: chrono_tz::Asia::Jakarta,
        };
        let now = d(today).and_hms_opt(2, 0, 0).unwrap().and_utc();
        prepare(c, &rules, now)
    }

    fn done(p: Prepared) -> Resolution {
        match p {
            Prepared::Done(r) => r,
            Prepared::Send(job) => panic!("sent: {job:?}"),
        }
    }

    #[test]
    fn a_current_stage_is_rendered_and_addressed() {
        let Prepared::Send(job) = run(&dunning_message("2025-11-20"), "2025-11-17") else {
            panic!("not sent")
        };
        assert_eq!(job.message.recipient, "6281234567890");
        assert!(job.message.body.contains("Rp 150.000"), "{}", job.message.body);
        assert!(job.rendered);
    }

    #[test]
    fn a_paid_invoice_is_cancelled() {
        let mut c = dunning_message("2025-11-20");
        if let Some(i) = c.invoice.as_mut() {
            i.status = Ok(Some("paid".into()));
        }
        assert_eq!(done(run(&c, "2025-11-17")), cancelled("invoice is paid"));
    }

    #[test]
    fn a_moved_due_date_or_a_finished_stage_cancels() {
        let mut c = dunning_message("2025-11-20");
        if let Some(i) = c.invoice.as_mut() {
            i.due_date = Ok(Some(d("2025-12-20")));
        }
        assert!(matches!(done(run(&c, "2025-11-17")), Resolution::Cancelled { reason }
            if reason.contains("changed to 2025-12-20")));
        let c = dunning_message("2025-11-20");
        assert!(matches!(done(run(&c, "2025-11-19")), Resolution::Cancelled { reason }
            if reason.contains("stage T-3 is over")));
    }

    #[test]
    fn an_opted_out_contact_is_skipped_at_send_time() {
        let mut c = dunning_message("2025-11-20");
        if let Some(ct) = c.contact.as_mut() {
            ct.opted_out = true;
        }
        assert!(matches!(done(run(&c, "2025-11-17")), Resolution::Skipped { .. }));
    }

    #[test]
    fn a_missing_phone_skips_and_falls_back() {
        let mut c = dunning_message("2025-11-20");
        if let Some(ct) = c.contact.as_mut() {
            ct.phone = Ok(Some("  ".into()));
        }
        assert_eq!(
            done(run(&c, "2025-11-17")),
            Resolution::Skipped {
                reason: "contact has no phone number; falling back to email".into(),
                fallback: Some(ChannelKind::Email)
            }
        );
    }

    #[test]
    fn a_bad_value_fails_the_message_naming_table_row_column_and_value() {
        let mut c = dunning_message("2025-11-20");
        if let Some(i) = c.invoice.as_mut() {
            i.amount =
                Err(BadValue::new("invoices", 3, "amount", "abc", "'abc' is not a whole number"));
        }
        let Resolution::Failed { reason, fallback: None } = done(run(&c, "2025-11-17")) else {
            panic!()
        };
        assert_eq!(reason, "invoices 3 amount: 'abc' is not a whole number");
        let mut c = dunning_message("2025-11-20");
        if let Some(i) = c.invoice.as_mut() {
            i.due_date = Err(BadValue::new("invoices", 3, "due_date", "x", "'x' is not a date"));
        }
        assert!(
            matches!(done(run(&c, "2025-11-17")), Resolution::Failed { reason, .. }
            if reason.contains("due_date")),
            "an unreadable due date is not 'no longer exists'"
        );
    }

    #[test]
    fn a_message_too_long_names_the_value_that_made_it_so() {
        let mut c = dunning_message("2025-11-20");
        if let Some(ct) = c.contact.as_mut() {
            ct.name = Ok(Some("x".repeat(MAX_BODY_CHARS)));
        }
        let Resolution::Failed { reason, .. } = done(run(&c, "2025-11-17")) else { panic!() };
        assert!(reason.starts_with("contacts 1 name: 'xxx"), "{reason}");
        assert!(reason.contains("is 65536 characters long"), "{reason}");
        assert!(reason.len() < 300, "the value is shown short: {reason}");
        let mut c = dunning_message("2025-11-20");
        if let Some(i) = c.invoice.as_mut() {
            i.number = Ok(Some("9".repeat(MAX_BODY_CHARS)));
        }
        let Resolution::Failed { reason, .. } = done(run(&c, "2025-11-17")) else { panic!() };
        assert!(reason.starts_with("invoices 3 number: '999"), "{reason}");
    }

    #[test]
    fn telegram_chat_ids_are_numbers_or_channel_names() {
        for chat in ["123456789", "-1001234567890", "@kanal_budi"] {
            assert!(is_chat_id(chat), "{chat}");
        }
        for chat in ["1.5", "-", "@", "42\u{1b}[2J", "https://t.me/budi", "@kanal budi", "١٢٣"] {
            assert!(!is_chat_id(chat), "{chat}");
        }
        let mut c = dunning_message("2025-11-20");
        if let (Ok(row), Some(ct)) = (c.row.as_mut(), c.contact.as_mut()) {
            row.channel = ChannelKind::Telegram;
            ct.telegram_chat_id = Ok(Some("42\u{1b}[2J".into()));
        }
        assert!(matches!(done(run(&c, "2025-11-17")), Resolution::Failed { reason, .. }
            if reason.starts_with("invalid Telegram chat id '42\\u{1b}[2J'")));
    }

    #[test]
    fn a_message_held_by_passes_that_died_is_not_sent_again_past_the_budget() {
        let mut c = dunning_message("2025-11-20");
        if let Ok(r) = c.row.as_mut() {
            r.expired_leases = 2;
        }
        assert!(matches!(run(&c, "2025-11-17"), Prepared::Send(_)));
        if let Ok(r) = c.row.as_mut() {
            r.expired_leases = 3;
        }
        assert!(matches!(done(run(&c, "2025-11-17")), Resolution::Failed { reason, .. }
            if reason.starts_with("outcome unknown")));
    }

    #[test]
    fn a_missing_contact_or_an_unreadable_row_fails_with_the_reason() {
        let mut c = dunning_message("2025-11-20");
        c.contact = None;
        assert!(matches!(done(run(&c, "2025-11-17")), Resolution::Failed { reason, .. }
            if reason == "contact 1 not found"));
        c.row = Err((7, "outbox row 7 cannot be read: kind".into()));
        assert!(matches!(done(run(&c, "2025-11-17")), Resolution::Failed { .. }));
    }
}
