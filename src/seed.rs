//! Demo data (SPEC §7), dated relative to the pass's "now" so that every row is due at the
//! seeding moment: the first `run` after `seed` sends a message of every kind.

use chrono::{DateTime, Duration, Months, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::store::{DemoContact, DemoData, DemoInvoice, DemoScheduled, DemoVehicle};

const MEMBERS: [(&str, &str); 10] = [
    ("Budi Santoso", "telegram"),
    ("Siti Rahmawati", "whatsapp"),
    ("Agus Wijaya", "whatsapp"),
    ("Dewi Lestari", "telegram,whatsapp"),
    ("Rudi Hartono", "whatsapp"),
    ("Sri Wahyuni", "whatsapp,email"),
    ("Andi Pratama", "telegram"),
    ("Rina Marlina", "whatsapp"),
    ("Joko Susilo", "whatsapp"),
    ("Maya Sari", "email,whatsapp"),
];

/// Days until due for the ten BPJS members: 3 in 7 days, 3 in 3, 2 in 1, 2 overdue.
const DUE_IN: [i64; 10] = [7, 7, 7, 3, 3, 3, 1, 1, -3, -6];

/// BPJS Kesehatan monthly contributions by class, in rupiah.
const AMOUNTS: [i64; 3] = [150_000, 100_000, 35_000];

pub fn demo_data(now: DateTime<Utc>, tz: Tz) -> DemoData {
    let today = now.with_timezone(&tz).date_naive();
    let mut data = DemoData::default();
    for (i, (name, channels)) in MEMBERS.iter().enumerate() {
        let n = i + 1;
        data.contacts.push(DemoContact {
            key: format!("demo-contact-{n}"),
            name: (*name).to_string(),
            phone: Some(format!("0812345678{n:02}")),
            email: Some(format!("{}@example.com", name.to_lowercase().replace(' ', "."))),
            telegram_chat_id: Some(format!("10000000{n:02}")),
            channels: (*channels).to_string(),
        });
        data.invoices.push(DemoInvoice {
            key: format!("demo-invoice-{n}"),
            contact_key: format!("demo-contact-{n}"),
            number: format!("INV-{}-{:06}", today.format("%Y%m%d"), 123_450 + n),
            amount: AMOUNTS[i % AMOUNTS.len()],
            due_date: today + Duration::days(DUE_IN[i]),
        });
    }
    let visit = |days: i64| today + Duration::days(days);
    let vehicles: [(&str, &str, Option<NaiveDate>, NaiveDate); 3] = [
        ("B 1234 ABC", "demo-contact-2", Some(visit(0)), months_before(visit(0), 4)),
        ("D 5678 XYZ", "demo-contact-3", Some(visit(4)), months_before(visit(4), 4)),
        // No next visit written: it is the last visit + 4 months, two days from now.
        ("L 9012 DEF", "demo-contact-5", None, months_before(visit(2), 4)),
    ];
    for (i, (plate, contact, next, last)) in vehicles.into_iter().enumerate() {
        data.vehicles.push(DemoVehicle {
            key: format!("demo-vehicle-{}", i + 1),
            contact_key: contact.to_string(),
            plate_no: plate.to_string(),
            last_visit_date: last,
            next_visit_date: next,
        });
    }
    let scheduled = [
        ("none", "demo-contact-2", 1, "Halo, ini pesan terjadwal sekali kirim dari reminderctl."),
        ("daily", "demo-contact-3", 5, "Selamat pagi! Jangan lupa cek tagihan Anda hari ini."),
        ("monthly", "demo-contact-8", 10, "Pengingat bulanan: laporan pemakaian sudah tersedia."),
    ];
    for (i, (recurrence, contact, minutes_ago, body)) in scheduled.into_iter().enumerate() {
        data.scheduled.push(DemoScheduled {
            key: format!("demo-scheduled-{}", i + 1),
            contact_key: contact.to_string(),
            channel: "whatsapp".into(),
            body: body.into(),
            scheduled_at: now - Duration::minutes(minutes_ago),
            recurrence: recurrence.into(),
        });
    }
    data
}

fn months_before(date: NaiveDate, months: u32) -> NaiveDate {
    date.checked_sub_months(Months::new(months)).unwrap_or(date)
}
