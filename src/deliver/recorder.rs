//! Writing results back. Results gather into batches (a statement per result costs the
//! database more than the result itself), one write at a time. A batch is whatever arrived
//! while the writer was busy (group commit): nothing waits for company, so under load the
//! batches grow by themselves and a lone result is written at once. A sender waits for its
//! result to be stored before it gives up its delivery slot, which is what bounds a crash to
//! `REMINDER_CONCURRENCY` messages of unknown fate.
//!
//! When a write fails for good, the pass halts *before* the waiting senders are released: no
//! new send starts, the results are kept in the local [`Journal`], and the pass exits 1 saying
//! how many are unrecorded.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;

use super::journal::Journal;
use crate::domain::channel::ChannelKind;
use crate::domain::outbox::Outcome;
use crate::store::Store;

/// Most results written back in one statement.
const RECORD_BATCH: usize = 512;
/// Result writes running at once. While one commits, the next batch fills. One writer beats two
/// on two cores, where CPU is what a pass runs short of: a second writer halves the batches and
/// so doubles the statements and commits for the same results. In a 20k send, one writer made
/// 870 commits instead of 1,550 and used a fifth less PostgreSQL CPU, and a result waited no
/// longer for its write (9 ms either way).
const RECORD_WRITERS: usize = 1;
/// Retries of a write that failed quickly (a dropped connection, a brief error), and how long
/// they may go on, before the pass halts. A write that failed slowly (it waited out the
/// database's busy timeout) is not retried: the database is not taking writes.
const WRITE_RETRIES: u32 = 2;
const WRITE_PATIENCE: Duration = Duration::from_secs(5);
const QUICK_FAILURE: Duration = Duration::from_secs(2);

/// Set once when the database stops taking results: every lane stops starting sends.
#[derive(Debug, Default)]
pub struct Halt {
    reason: OnceLock<String>,
    notify: Notify,
}

impl Halt {
    pub fn set(&self, reason: impl Into<String>) {
        if self.reason.set(reason.into()).is_ok() {
            self.notify.notify_waiters();
        }
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.reason.get().is_some() {
            return;
        }
        notified.await;
    }
}

type Request = (Outcome, Option<oneshot::Sender<()>>);

/// The handle senders use.
#[derive(Clone)]
pub struct Recorder(mpsc::Sender<Request>);

impl Recorder {
    /// Queues a result without waiting for it to be written: for outcomes decided without a
    /// provider call, where a crash before the write only means the message is handled again.
    pub async fn submit(&self, outcome: Outcome) {
        let _ = self.0.send((outcome, None)).await;
    }

    /// Queues a result and waits until it is written (or kept in the journal).
    pub async fn record(&self, outcome: Outcome) {
        let (ack, done) = oneshot::channel();
        if self.0.send((outcome, Some(ack))).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// What the recorder did over the pass.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub late: u64,
    pub unrecorded: u64,
    pub journaled: u64,
    /// Channels that received fallback rows.
    pub fallbacks: Vec<ChannelKind>,
}

impl Written {
    fn add(&mut self, other: Written) {
        self.late += other.late;
        self.unrecorded += other.unrecorded;
        self.journaled += other.journaled;
        self.fallbacks.extend(other.fallbacks);
        self.fallbacks.sort();
        self.fallbacks.dedup();
    }
}

/// Starts the recorder of a pass.
pub fn start(
    store: Arc<dyn Store>,
    token: String,
    halt: Arc<Halt>,
    journal: Option<Journal>,
) -> (Recorder, tokio::task::JoinHandle<Written>) {
    let (tx, rx) = mpsc::channel(RECORD_BATCH * 2);
    let task = tokio::spawn(run(store, token, rx, halt, journal));
    (Recorder(tx), task)
}

async fn run(
    store: Arc<dyn Store>,
    token: String,
    mut rx: mpsc::Receiver<Request>,
    halt: Arc<Halt>,
    journal: Option<Journal>,
) -> Written {
    let journal = Arc::new(journal);
    let mut writes: JoinSet<Written> = JoinSet::new();
    let mut total = Written::default();
    loop {
        // A writer is free first, and only then the batch is taken: results that arrive while
        // every writer is busy join the next batch (group commit), and a result that finds a
        // writer free is written at once instead of lingering for company.
        while writes.len() >= RECORD_WRITERS {
            if let Some(Ok(w)) = writes.join_next().await {
                total.add(w);
            }
        }
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        writes.spawn(write_batch(
            store.clone(),
            token.clone(),
            batch,
            halt.clone(),
            journal.clone(),
        ));
    }
    while let Some(done) = writes.join_next().await {
        if let Ok(w) = done {
            total.add(w);
        }
    }
    total
}

/// Writes one batch, retrying a failed write briefly; a write that still fails halts the pass
/// and goes to the journal. The senders are acknowledged only afterwards.
async fn write_batch(
    store: Arc<dyn Store>,
    token: String,
    batch: Vec<Request>,
    halt: Arc<Halt>,
    journal: Arc<Option<Journal>>,
) -> Written {
    let (outcomes, acks): (Vec<Outcome>, Vec<Option<oneshot::Sender<()>>>) =
        batch.into_iter().unzip();
    let started = Instant::now();
    let mut tries = 0;
    let mut out = Written::default();
    loop {
        let attempt_started = Instant::now();
        match store.record(&token, &outcomes).await {
            Ok(recorded) => {
                for id in &recorded.lost {
                    tracing::warn!(
                        message_id = id,
                        "result arrived after the lease ended and another pass took the \
                         message; kept in delivery_attempts only"
                    );
                }
                out.late = recorded.lost.len() as u64;
                out.fallbacks = recorded.fallbacks;
                break;
            }
            Err(e)
                if halt.reason().is_none()
                    && tries < WRITE_RETRIES
                    && attempt_started.elapsed() < QUICK_FAILURE
                    && started.elapsed() < WRITE_PATIENCE =>
            {
                tries += 1;
                tracing::warn!(error = %e, "writing results failed; trying again");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
            }
            Err(e) => {
                halt.set(format!("cannot store delivery results: {e}"));
                out.unrecorded = outcomes.len() as u64;
                let Some(j) = journal.as_ref() else {
                    tracing::error!(
                        error = %e,
                        count = outcomes.len(),
                        "could not write delivery results; these messages come back when their \
                         lease ends"
                    );
                    break;
                };
                match j.keep(&token, &outcomes) {
                    Ok(path) => {
                        out.journaled = outcomes.len() as u64;
                        tracing::error!(
                            error = %e,
                            count = outcomes.len(),
                            journal = %path.display(),
                            "could not write delivery results; kept them in the journal, which \
                             the next pass writes before it sends anything"
                        );
                    }
                    Err(io) => tracing::error!(
                        error = %e,
                        journal_error = %io,
                        count = outcomes.len(),
                        "could not write delivery results, nor keep them in the journal; these \
                         messages come back when their lease ends"
                    ),
                }
                break;
            }
        }
    }
    for ack in acks.into_iter().flatten() {
        let _ = ack.send(());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_halt_keeps_its_first_reason_and_wakes_whoever_waits() {
        let halt = Arc::new(Halt::default());
        assert_eq!(halt.reason(), None);
        let waiter = tokio::spawn({
            let halt = halt.clone();
            async move { halt.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing halted yet");
        halt.set("disk full");
        halt.set("a later reason");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert_eq!(halt.reason(), Some("disk full"));
        tokio::time::timeout(Duration::from_secs(5), halt.wait())
            .await
            .expect("waiting on a halt already set returns at once");
    }

    #[test]
    fn what_the_writers_did_adds_up_and_names_each_fallback_channel_once() {
        let mut total =
            Written { late: 1, unrecorded: 2, journaled: 3, fallbacks: vec![ChannelKind::Email] };
        total.add(Written {
            late: 10,
            unrecorded: 20,
            journaled: 30,
            fallbacks: vec![ChannelKind::Telegram, ChannelKind::Email],
        });
        assert_eq!((total.late, total.unrecorded, total.journaled), (11, 22, 33));
        let mut both = vec![ChannelKind::Email, ChannelKind::Telegram];
        both.sort();
        assert_eq!(total.fallbacks, both);
    }
}
