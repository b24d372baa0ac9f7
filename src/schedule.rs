//! Scheduled messages managed by people (seed 004's dialog on the command line): every argument
//! is checked here, before anything is written, and an owner's messages are theirs alone.

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::domain::dates;
use crate::domain::recurrence::{next_occurrence, Recurrence};
use crate::store::{NewScheduled, ScheduledEdit, ScheduledListing, Store, StoreError};
use crate::templates::Templates;

/// Why a schedule command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// An argument that cannot work, named.
    #[error("{flag}: {problem}")]
    Invalid { flag: &'static str, problem: String },
    #[error("no scheduled message {0}")]
    NotFound(i64),
    #[error(
        "scheduled message {id} was created by {owner}, not by '{user}': only its creator may \
         change it"
    )]
    NotYours { id: i64, owner: String, user: String },
    #[error("scheduled message {0} is cancelled")]
    Cancelled(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid { flag, problem: problem.into() }
}

/// What `schedule add` asks for.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub contacts: Vec<i64>,
    pub at: String,
    pub body: String,
    pub every: Option<String>,
    pub channel: Option<String>,
    pub connection: Option<String>,
    pub media_url: Option<String>,
    pub caption: Option<String>,
    pub created_by: Option<String>,
}

/// What `schedule edit` asks for; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EditRequest {
    pub body: Option<String>,
    pub at: Option<String>,
    pub every: Option<String>,
    pub channel: Option<String>,
    pub connection: Option<String>,
    pub media_url: Option<String>,
    pub caption: Option<String>,
}

/// One message `schedule add` created.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Added {
    pub id: i64,
    pub contact_id: i64,
    pub contact_name: String,
    pub scheduled_at: DateTime<Utc>,
    /// When it goes out first: the time itself, or a recurring message's next occurrence.
    pub first_run: DateTime<Utc>,
    pub recurrence: String,
    pub channel: String,
}

/// What a schedule command checks against.
pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub settings: &'a Settings,
    pub templates: &'a Templates,
    /// The business clock's now (`--now`).
    pub now: DateTime<Utc>,
}

fn time(raw: &str, settings: &Settings) -> Result<DateTime<Utc>, ScheduleError> {
    dates::instant(raw, settings.timezone).map_err(|_| {
        invalid(
            "--at",
            format!(
                "'{}' is not a time (RFC 3339, e.g. 2025-11-18T09:00:00+07:00, or local \
                 YYYY-MM-DD HH:MM in {})",
                crate::store::shown(raw),
                settings.timezone
            ),
        )
    })
}

fn recurrence(raw: Option<&str>) -> Result<Recurrence, ScheduleError> {
    raw.map_or(Ok(Recurrence::None), |r| r.parse().map_err(|e: String| invalid("--every", e)))
}

/// A channel spec a person typed: every name a channel, `+` joining, `,` falling back.
fn channel_spec(raw: Option<&str>) -> Result<String, ScheduleError> {
    let Some(raw) = raw else { return Ok("whatsapp".to_string()) };
    crate::domain::channel::parse_preference(raw).map_err(|e| invalid("--channel", e))
}

/// A WhatsApp connection name: `None` for the default one; it must be configured.
fn connection(raw: Option<&str>, settings: &Settings) -> Result<Option<String>, ScheduleError> {
    let Some(name) = raw.map(|r| r.trim().to_ascii_lowercase()) else { return Ok(None) };
    if name.is_empty() || name == "default" {
        return Ok(None);
    }
    if settings.connections.iter().any(|c| c.name == name) {
        return Ok(Some(name));
    }
    let mut known: Vec<&str> = vec!["default"];
    known.extend(settings.connections.iter().map(|c| c.name.as_str()));
    Err(invalid(
        "--connection",
        format!(
            "'{}' is not a configured WhatsApp connection (configured: {}; see \
             WHATSAPP_CONNECTIONS)",
            crate::store::shown(&name),
            known.join(", ")
        ),
    ))
}

fn media(raw: Option<&str>) -> Result<Option<String>, ScheduleError> {
    let Some(url) = raw.map(str::trim).filter(|u| !u.is_empty()) else { return Ok(None) };
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Some(url.to_string()))
        }
        _ => Err(invalid("--media-url", "is not a public http(s) URL")),
    }
}

fn text(flag: &'static str, value: &str, templates: &Templates) -> Result<(), ScheduleError> {
    templates.check_text(value).map_err(|e| invalid(flag, e))
}

/// The first run of a series anchored at `at`: the anchor itself when it is to come, else its
/// next occurrence. A one-off must be in the future.
fn first_run(
    at: DateTime<Utc>,
    every: Recurrence,
    ctx: &Context<'_>,
) -> Result<Option<DateTime<Utc>>, ScheduleError> {
    if at >= ctx.now {
        return Ok(None);
    }
    if every == Recurrence::None {
        let local = |t: DateTime<Utc>| {
            t.with_timezone(&ctx.settings.timezone).format("%Y-%m-%d %H:%M %Z").to_string()
        };
        return Err(invalid(
            "--at",
            format!(
                "{} is in the past (now {}); a one-off message needs a time to come",
                local(at),
                local(ctx.now)
            ),
        ));
    }
    Ok(next_occurrence(at, every, ctx.now, ctx.settings.timezone))
}

/// `schedule add`: one row per contact, all or none.
pub async fn add(ctx: &Context<'_>, req: &AddRequest) -> Result<Vec<Added>, ScheduleError> {
    let settings = ctx.settings;
    let at = time(&req.at, settings)?;
    let every = recurrence(req.every.as_deref())?;
    let channel = channel_spec(req.channel.as_deref())?;
    let connection = connection(req.connection.as_deref(), settings)?;
    let media_url = media(req.media_url.as_deref())?;
    let caption = req.caption.clone().filter(|c| !c.trim().is_empty());
    text("--body", &req.body, ctx.templates)?;
    if let Some(c) = &caption {
        text("--caption", c, ctx.templates)?;
    }
    if req.body.trim().is_empty() && media_url.is_none() {
        return Err(invalid("--body", "is empty (give a text, or --media-url with a --caption)"));
    }
    let next_run_at = first_run(at, every, ctx)?;
    let mut contacts = req.contacts.clone();
    contacts.sort_unstable();
    contacts.dedup();
    let found = ctx.store.contact_names(&contacts).await?;
    let missing: Vec<String> = contacts
        .iter()
        .filter(|id| !found.iter().any(|(f, _)| f == *id))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(invalid("--contact", format!("no contact {}", missing.join(", "))));
    }
    let created_by = req.created_by.clone().filter(|u| !u.trim().is_empty());
    let rows: Vec<NewScheduled> = contacts
        .iter()
        .copied()
        .map(|contact_id| NewScheduled {
            contact_id,
            channel: channel.clone(),
            body: req.body.clone(),
            media_url: media_url.clone(),
            caption: caption.clone(),
            scheduled_at: at,
            next_run_at,
            recurrence: every.as_str().to_string(),
            connection: connection.clone(),
            created_by: created_by.clone(),
        })
        .collect();
    let ids = ctx.store.add_scheduled(&rows).await?;
    Ok(ids
        .into_iter()
        .zip(&rows)
        .map(|(id, r)| Added {
            id,
            contact_id: r.contact_id,
            contact_name: found
                .iter()
                .find(|(c, _)| *c == r.contact_id)
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            scheduled_at: at,
            first_run: next_run_at.unwrap_or(at),
            recurrence: r.recurrence.clone(),
            channel: r.channel.clone(),
        })
        .collect())
}

/// The message `id`, if `user` (when given) may change it.
async fn owned(
    store: &dyn Store,
    id: i64,
    user: Option<&str>,
) -> Result<ScheduledListing, ScheduleError> {
    let row = store
        .list_scheduled(Some(id), None, None)
        .await?
        .into_iter()
        .next()
        .ok_or(ScheduleError::NotFound(id))?;
    if let Some(user) = user {
        if row.created_by.as_deref() != Some(user) {
            let owner = row.created_by.as_deref().map_or_else(
                || "nobody in particular".to_string(),
                |o| format!("'{}'", crate::store::shown(o)),
            );
            return Err(ScheduleError::NotYours { id, owner, user: crate::store::shown(user) });
        }
    }
    Ok(row)
}

/// `schedule edit`: the changes are checked like `add`'s arguments.
pub async fn edit(
    ctx: &Context<'_>,
    id: i64,
    req: &EditRequest,
    user: Option<&str>,
) -> Result<ScheduledListing, ScheduleError> {
    let row = owned(ctx.store, id, user).await?;
    if row.status == "cancelled" {
        return Err(ScheduleError::Cancelled(id));
    }
    let settings = ctx.settings;
    let mut change = ScheduledEdit::default();
    if let Some(body) = &req.body {
        text("--body", body, ctx.templates)?;
        change.body = Some(body.clone());
    }
    if let Some(caption) = &req.caption {
        text("--caption", caption, ctx.templates)?;
        change.caption = Some(Some(caption.clone()).filter(|c| !c.trim().is_empty()));
    }
    if req.channel.is_some() {
        change.channel = Some(channel_spec(req.channel.as_deref())?);
    }
    if req.connection.is_some() {
        change.connection = Some(connection(req.connection.as_deref(), settings)?);
    }
    if req.media_url.is_some() {
        change.media_url = Some(media(req.media_url.as_deref())?);
    }
    let every = match &req.every {
        Some(e) => recurrence(Some(e))?,
        None => row.recurrence.parse().unwrap_or(Recurrence::None),
    };
    if req.every.is_some() {
        change.recurrence = Some(every.as_str().to_string());
    }
    if req.at.is_some() || req.every.is_some() {
        let at = match &req.at {
            Some(raw) => time(raw, settings)?,
            None => row.next_run_at.ok_or_else(|| {
                invalid("--at", "is needed: the message's current time cannot be read")
            })?,
        };
        let next = first_run(at, every, ctx)?;
        change.timing = Some((at, next));
        // A one-off that went out (or failed) goes again at its new time.
        if matches!(row.status.as_str(), "sent" | "failed") {
            change.status = Some("pending".to_string());
        }
    }
    let empty_body = change.body.as_deref().unwrap_or(&row.body).trim().is_empty();
    let no_media = change.media_url.clone().unwrap_or_else(|| row.media_url.clone()).is_none();
    if empty_body && no_media {
        return Err(invalid("--body", "would leave the message empty"));
    }
    ctx.store.edit_scheduled(id, &change).await?;
    owned(ctx.store, id, None).await
}

/// `schedule cancel`.
pub async fn cancel(
    store: &dyn Store,
    id: i64,
    user: Option<&str>,
) -> Result<(ScheduledListing, u64), ScheduleError> {
    let row = owned(store, id, user).await?;
    if row.status == "cancelled" {
        return Err(ScheduleError::Cancelled(id));
    }
    let queued = store.cancel_scheduled(id, user).await?;
    Ok((owned(store, id, None).await?, queued))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_spec_is_checked_and_normalized() {
        assert_eq!(
            channel_spec(Some(" WhatsApp + email ,telegram")).unwrap(),
            "whatsapp+email,telegram"
        );
        assert_eq!(channel_spec(None).unwrap(), "whatsapp");
        let e = channel_spec(Some("whatsapp+sms")).unwrap_err().to_string();
        assert!(e.starts_with("--channel: unknown channel 'sms'"), "{e}");
        assert!(channel_spec(Some(",email")).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn a_media_url_must_be_public_http() {
        assert_eq!(
            media(Some(" https://x.id/a.pdf ")).unwrap().as_deref(),
            Some("https://x.id/a.pdf")
        );
        assert!(media(Some("file:///etc/passwd")).is_err());
        assert_eq!(media(Some("")).unwrap(), None);
    }
}
