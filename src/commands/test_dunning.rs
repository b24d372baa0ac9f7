//! `test-dunning <email> <phone>`: a test customer and invoice, and its current reminder by email
//! and WhatsApp now, after a confirmation prompt; the steps print as seed 003's command did.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Duration;

use crate::channels::Registry;
use crate::cli::Common;
use crate::deliver::{Delivery, Stop};
use crate::domain::{format, phone};
use crate::generate::local_today;
use crate::report::emit;
use crate::store::NewMessage;
use crate::templates::{DunningVars, Templates};

const TEST_NAME: &str = "Pelanggan Uji";
const TEST_AMOUNT: i64 = 150_000;

pub async fn run(
    common: &Common,
    email: &str,
    raw_phone: &str,
    yes: bool,
    env: HashMap<String, String>,
) -> anyhow::Result<ExitCode> {
    let email = email.trim();
    anyhow::ensure!(
        email.contains('@') && !email.contains(char::is_whitespace),
        "'{email}' is not an email address"
    );
    let recipient = phone::normalize(raw_phone)?;
    let setup = super::setup(common, env).await?;
    let settings = &setup.settings;
    let registry = Registry::from_settings(settings).context("cannot set up the channels")?;
    let channels: Vec<(&str, String, &str)> =
        [("email", email.to_string()), ("whatsapp", recipient)]
            .into_iter()
            .filter_map(|(c, to)| registry.get(c).map(|p| (c, to, p.provider())))
            .collect();
    anyhow::ensure!(
        !channels.is_empty(),
        "neither email nor WhatsApp is configured (see the README's configuration table)"
    );

    let now = setup.clock.now();
    let today = local_today(now, settings.timezone);
    let due = today + Duration::days(3);
    let stage = settings.dunning.current_stage(due, today).context(
        "no dunning stage is current 3 days before the due date (REMINDER_DUNNING_BEFORE)",
    )?;
    let number = format!("INV-{}-{:06}", today.format("%Y%m%d"), rand::random::<u32>() % 1_000_000);
    let existing = setup.store.test_contact(TEST_NAME, email, raw_phone, true).await?;
    let templates = Templates::load(settings.template_dir.as_deref())?;
    let preview = templates.dunning(
        &DunningVars {
            name: existing.as_ref().map_or(TEST_NAME.to_string(), |c| c.name.clone()),
            invoice_number: number.clone(),
            amount: format::rupiah(TEST_AMOUNT),
            amount_value: TEST_AMOUNT,
            due_date: format::tanggal(due),
            stage: stage.name.clone(),
            days_left: 3,
            days_overdue: 0,
            sender_name: settings.sender_name.clone().unwrap_or_default(),
            service_phone: settings.service_phone.clone().unwrap_or_default(),
        },
        false,
    )?;
    let mut prompt = format!(
        "This creates invoice {number} ({}, due {}) for the customer with email {email}{}, \
         and sends its {} reminder now:\n",
        format::rupiah(TEST_AMOUNT),
        format::tanggal(due),
        existing.as_ref().map_or(" (a new test customer)".to_string(), |c| format!(
            " ({}, ID {})",
            c.name, c.id
        )),
        stage.name
    );
    for (channel, to, provider) in &channels {
        let _ = writeln!(prompt, "  {channel} to {to} via {provider}");
    }
    let _ = write!(prompt, "\nSubject: {}\n\n{}\n\nContinue?", preview.subject, preview.body);
    super::confirm(&prompt, yes)?;

    let mut out = String::from("🔧 Creating test customer...\n");
    let contact = setup
        .store
        .test_contact(TEST_NAME, email, raw_phone, false)
        .await?
        .context("the test customer was not created")?;
    if contact.existed {
        let _ = writeln!(out, "✅ Using existing customer: {} (ID: {})", contact.name, contact.id);
    } else {
        let _ = writeln!(out, "✅ Customer created: {} (ID: {})", contact.name, contact.id);
    }
    let _ = writeln!(out, "🧾 Creating test invoice...");
    let invoice = setup.store.create_test_invoice(contact.id, &number, TEST_AMOUNT, due).await?;
    let _ = writeln!(out, "✅ Invoice created: {number}");
    let _ = writeln!(out, "📱 Sending dunning notification ({})...", stage.name);
    let rows: Vec<NewMessage> = channels
        .iter()
        .map(|(channel, _, _)| NewMessage {
            kind: crate::domain::outbox::Kind::Dunning,
            subject_id: Some(invoice),
            stage: Some(stage.name.clone()),
            event_date: Some(due),
            // The rule's own key, so a later `run` does not send this stage again.
            dedup_key: format!("dunning:{invoice}:{due}:{}", stage.name),
            contact_id: Some(contact.id),
            channel: (*channel).to_string(),
            recipient: None,
            body: None,
        })
        .collect();
    let ids = setup.store.insert_messages(&rows, now).await.context("cannot queue the reminder")?;
    let delivery = Delivery {
        store: setup.store.clone(),
        settings,
        registry: &registry,
        templates: &templates,
        clock: setup.clock,
        stop: Arc::new(Stop::default()),
        all_details: true,
        journal: Some(setup.journal()),
    };
    let report = delivery.deliver_now(&ids).await.context("delivery failed")?;
    let all_sent =
        report.details.len() == channels.len() && report.details.iter().all(|d| d.status == "sent");
    for d in &report.details {
        let to = d.recipient.as_deref().unwrap_or("?");
        if d.status == "sent" {
            let _ = writeln!(out, "✅ {} to {to}: sent", d.channel);
        } else {
            let _ = writeln!(
                out,
                "❌ {} to {to}: {} ({})",
                d.channel,
                d.status,
                d.error.as_deref().unwrap_or("no reason given")
            );
        }
    }
    if common.json {
        emit(
            &serde_json::json!({
                "customer": {"id": contact.id, "name": contact.name, "existed": contact.existed},
                "invoice": {"id": invoice, "number": number, "due_date": due.to_string()},
                "stage": stage.name,
                "sent": all_sent,
                "details": report.details,
            })
            .to_string(),
        );
    } else {
        emit(&out);
    }
    Ok(if all_sent { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
