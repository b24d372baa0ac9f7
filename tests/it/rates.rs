//! Rate limits are exact at any rate: the shared limiter keeps its slots in nanoseconds, so a
//! rate above 1000/s is never rounded to one slot a millisecond, and a slow rate holds across
//! passes and hosts. These count slots as the store hands them out (on the store's own clock),
//! never how long anything took.

use std::time::Duration;

use crate::both;
use crate::helpers::{many_due, pairs, statuses, twilio_env, Sink, TestDb, T3_NOW, TZ};
use reminderctl::domain::channel::{ChannelKind, Route};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

both!(a_million_a_second_gets_a_million_slots_a_second, million_body);
async fn million_body(db: &TestDb) {
    let store = reminderctl::store::connect(&db.url, TZ).await.expect("store");
    let route = Route::of(ChannelKind::WhatsApp);
    let interval = NANOS_PER_SECOND / 1_000_000;
    // Five million slots at 1 µs each fit in five seconds; slots of a whole millisecond would
    // let only 10 000 fit in the ten-second horizon.
    let horizon = Duration::from_secs(10);
    let grant = store
        .reserve_slots(&route, 5_000_000, interval, horizon)
        .await
        .expect("reserve")
        .expect("slots are free");
    assert_eq!(grant.count, 5_000_000);
    assert_eq!(grant.interval_ns, 1_000);
    assert_eq!(grant.offset(999).checked_sub(grant.offset(0)), Some(Duration::from_micros(999)));
    assert_eq!(
        grant.offset(4_999_999).checked_sub(grant.offset(0)),
        Some(Duration::from_micros(4_999_999))
    );
    // Giving back the unused half returns exactly those slots: the next grant starts where the
    // used ones end.
    let start_ns = grant.end_ns - 5_000_000 * 1_000;
    store.return_slots(&route, grant, 2_500_000).await.expect("return");
    let next = store
        .reserve_slots(&route, 10, interval, horizon)
        .await
        .expect("reserve")
        .expect("slots are free");
    assert_eq!(next.end_ns, start_ns + 2_500_010 * 1_000, "{next:?} after {grant:?}");
}

both!(twenty_a_second_stays_twenty_a_second_across_hosts, twenty_body);
async fn twenty_body(db: &TestDb) {
    // Two stores on one database are two hosts: each reserves its batch behind the other's,
    // so together they never get more than 20 slots a second.
    let first = reminderctl::store::connect(&db.url, TZ).await.expect("store");
    let second = reminderctl::store::connect(&db.url, TZ).await.expect("store");
    let route = Route::of(ChannelKind::WhatsApp);
    let interval = NANOS_PER_SECOND / 20;
    let horizon = Duration::from_secs(60);
    let a = first.reserve_slots(&route, 100, interval, horizon).await.expect("a").expect("free");
    let b = second.reserve_slots(&route, 100, interval, horizon).await.expect("b").expect("free");
    let c = first.reserve_slots(&route, 100, interval, horizon).await.expect("c").expect("free");
    assert_eq!((a.count, b.count, c.count), (100, 100, 100));
    // Back to back, 50 ms apart: 300 slots span exactly 15 s of the store's clock.
    assert_eq!(b.end_ns - a.end_ns, 100 * interval);
    assert_eq!(c.end_ns - b.end_ns, 100 * interval);
    assert!(b.first_in > Duration::from_secs(4), "b waits behind a: {b:?}");
    assert!(c.first_in > Duration::from_secs(9), "c waits behind a and b: {c:?}");
    // A horizon that the queue reaches past gets only the slots inside it.
    let d = second.reserve_slots(&route, 1_000, interval, Duration::from_secs(20)).await;
    let d = d.expect("d").expect("some slots are inside the horizon");
    assert!(d.count < 200, "{d:?}");
}

both!(a_million_a_second_sends_each_message_once_in_one_pass, million_pass_body);
async fn million_pass_body(db: &TestDb) {
    many_due(db, 600).await;
    db.pass(&["generate", "--now", T3_NOW], &[]).await;
    let sink = Sink::start(Duration::ZERO).await;
    let mut env = twilio_env(&sink.uri());
    env.retain(|(k, _)| *k != "REMINDER_WHATSAPP_RATE" && *k != "REMINDER_CONCURRENCY");
    env.push(("REMINDER_WHATSAPP_RATE", "1000000/s".into()));
    env.push(("REMINDER_CONCURRENCY", "64".into()));
    db.pass(&["send", "--now", T3_NOW], &pairs(&env)).await;
    assert_eq!(sink.count(), 600);
    assert!(sink.per_recipient().values().all(|n| *n == 1));
    assert_eq!(statuses(db).await, "sent=600");
    assert_eq!(
        db.int("SELECT count(*) FROM messages WHERE provider_message_id IS NOT NULL").await,
        600
    );
}
