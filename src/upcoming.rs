//! `upcoming`: what the rules and schedules will send over the next days, day by day, rendered
//! as it would go out. Each day is a dry generation at that day's last instant, so it sees
//! exactly what the rules see on that date; an occurrence planned on an earlier day is not
//! listed again, as the outbox's dedup would not queue it again. Nothing is written.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};

use crate::channels::Registry;
use crate::clock::Clock;
use crate::config::Settings;
use crate::deliver::{Delivery, Stop};
use crate::domain::channel::ChannelKind;
use crate::domain::dates::resolve_local;
use crate::report::Detail;
use crate::store::{GenRow, Store, StoreError};
use crate::templates::Templates;

/// The longest look ahead `--days` accepts.
pub const MAX_DAYS: u32 = 366;

/// One local day of the forecast.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Day {
    pub date: NaiveDate,
    /// Already queued and due now (listed on the first day only).
    pub queued: Vec<Detail>,
    /// What the rules and schedules make due on this day.
    pub messages: Vec<Detail>,
}

/// What `upcoming` needs.
pub struct Forecast<'a> {
    pub store: Arc<dyn Store>,
    pub settings: &'a Settings,
    pub registry: &'a Registry,
    pub templates: &'a Templates,
}

impl Forecast<'_> {
    /// The next `days` local days starting with the one `now` falls on.
    pub async fn days(&self, now: DateTime<Utc>, days: u32) -> Result<Vec<Day>, StoreError> {
        let tz = self.settings.timezone;
        let today = now.with_timezone(&tz).date_naive();
        let mut planned: HashSet<(String, String)> = HashSet::new();
        let mut out = Vec::new();
        for offset in 0..days.min(MAX_DAYS) {
            let date = today + Duration::days(i64::from(offset));
            // The day's last instant: everything that comes due during it, and the rules'
            // windows as that date has them.
            let next = resolve_local((date + Duration::days(1)).and_time(NaiveTime::MIN), tz);
            let at = (next - Duration::seconds(1)).max(now);
            let generated =
                crate::generate::generate(self.store.as_ref(), self.settings, at, true, usize::MAX)
                    .await?;
            let rows: Vec<GenRow> = generated
                .rows()
                .filter(|r| planned.insert((r.dedup_key.clone(), r.channel.clone())))
                .cloned()
                .collect();
            let delivery = self.delivery(at);
            let messages = delivery.render(&rows, true).await?;
            let queued = if offset == 0 { self.queued(&delivery, now).await? } else { Vec::new() };
            out.push(Day { date, queued, messages });
        }
        Ok(out)
    }

    fn delivery(&self, at: DateTime<Utc>) -> Delivery<'_> {
        Delivery {
            store: self.store.clone(),
            settings: self.settings,
            registry: self.registry,
            templates: self.templates,
            clock: Clock::starting_at(at),
            stop: Arc::new(Stop::default()),
            all_details: true,
            journal: None,
        }
    }

    /// Messages already in the outbox and due now, as the next pass would send them.
    async fn queued(
        &self,
        delivery: &Delivery<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Detail>, StoreError> {
        let mut rows = Vec::new();
        for channel in ChannelKind::ALL {
            rows.extend(self.store.preview_due(channel, now, i64::MAX).await?);
        }
        delivery.render(&rows, true).await
    }
}
