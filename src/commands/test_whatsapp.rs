//! `test-whatsapp <phone> <message>`: one WhatsApp message now, after a confirmation prompt.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::channels::Registry;
use crate::cli::Common;
use crate::deliver::{Delivery, Stop};
use crate::domain::phone;
use crate::report::emit;
use crate::store::NewMessage;
use crate::templates::Templates;

pub async fn run(
    common: &Common,
    raw_phone: &str,
    message: &str,
    yes: bool,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!message.trim().is_empty(), "the message is empty");
    let recipient = phone::normalize(raw_phone)?;
    let setup = super::setup(common, env).await?;
    let registry =
        Registry::from_settings(&setup.settings).context("cannot set up the channels")?;
    let provider = registry.get("whatsapp").context(
        "WhatsApp is not configured: set WHATSAPP_PROVIDER and the provider's settings (see README)",
    )?;
    super::confirm(
        &format!(
            "To {recipient} (entered as {raw_phone}) via {}:\n\n{message}\n\nSend this WhatsApp \
             message now?",
            provider.provider()
        ),
        yes,
    )?;

    let now = setup.clock.now();
    let row = NewMessage {
        kind: crate::domain::outbox::Kind::Test,
        subject_id: None,
        stage: None,
        event_date: None,
        dedup_key: format!("test:{}:{:08x}", now.timestamp_millis(), rand::random::<u32>()),
        contact_id: None,
        channel: "whatsapp".into(),
        recipient: Some(recipient.clone()),
        body: Some(message.to_string()),
    };
    let ids = setup.store.insert_messages(&[row], now).await.context("cannot queue the message")?;
    let templates = Templates::load(setup.settings.template_dir.as_deref())?;
    let delivery = Delivery {
        store: setup.store.clone(),
        settings: &setup.settings,
        registry: &registry,
        templates: &templates,
        clock: setup.clock,
        stop: Arc::new(Stop::default()),
        all_details: true,
        journal: Some(setup.journal()),
    };
    let report = delivery.deliver_now(&ids).await.context("delivery failed")?;
    let detail = report.details.first();
    let sent = detail.is_some_and(|d| d.status == "sent");
    if common.json {
        emit(&serde_json::json!({"sent": sent, "details": report.details}).to_string());
    } else {
        let mut out = String::new();
        let _ = writeln!(out, "Sending WhatsApp to: {recipient}\nMessage: {message}");
        match detail {
            Some(d) if sent => {
                let _ = writeln!(
                    out,
                    "✅ WhatsApp sent via {} (message #{})",
                    provider.provider(),
                    d.id.unwrap_or(0)
                );
            }
            Some(d) => {
                let _ = writeln!(
                    out,
                    "❌ WhatsApp not sent: {} ({})",
                    d.status,
                    d.error.as_deref().unwrap_or("no reason given")
                );
            }
            None => {
                let _ = writeln!(out, "❌ WhatsApp not sent: the message could not be claimed");
            }
        }
        emit(&out);
    }
    Ok(if sent { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
