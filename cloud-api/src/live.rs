//! The live feed of committed results behind `GET /api/v1/events`, fed on every replica.
//!
//! The transaction that completes (or enriches) a result also numbers it in `result_events`
//! (the store's rule, on both backends). Each replica runs one [`Live`] poller that reads the
//! rows past the last it saw every [`POLL`] and hands the results to its connected clients
//! through a bounded broadcast channel; so a result completed by any replica's worker reaches
//! the clients of every replica, with no broker or `LISTEN/NOTIFY` connection to keep. An
//! idle poll is one indexed read.
//!
//! PostgreSQL takes a `bigserial` when a row is inserted, not when it commits: a lower number
//! may become visible after a higher one. The poller remembers the numbers it skipped
//! ([`Feed`]'s holes) and reads from the oldest of them until it appears or [`HOLE_WAIT`]
//! passes (longer than any statement may run). The embedded store's one writer commits in
//! number order, so it never has holes.
//!
//! A client that reconnects with `Last-Event-ID` gets the results it missed from the store
//! ([`missed`]), up to [`REPLAY_MAX`] (more: a `lagged` event); the numbers are kept for
//! [`KEEP`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::store::{LiveResult, Store, StoreError};
use crate::telemetry;

/// How often a replica looks for results committed by any replica.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a skipped number is waited for.
pub const HOLE_WAIT: Duration = Duration::from_secs(30);
/// Most results replayed to a reconnecting client.
pub const REPLAY_MAX: usize = 1000;
/// How long the numbers of committed results are kept for reconnecting clients.
pub const KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Results waiting for a slow client before it is told it lagged.
const CHANNEL: usize = 1024;
/// Most numbers read per poll.
const BATCH: usize = 500;

/// A replica's feed: subscribe to hear of every result committed from now on.
#[derive(Clone)]
pub struct Live {
    tx: Arc<broadcast::Sender<Arc<LiveResult>>>,
}

impl Live {
    /// Starts the poller (a task that ends when every `Live` handle is dropped) after the
    /// newest result committed so far (read when the store answers).
    pub async fn start(store: Arc<dyn Store>) -> Live {
        let (tx, _) = broadcast::channel(CHANNEL);
        let tx = Arc::new(tx);
        let feed = match store.last_result_event().await {
            Ok(last) => Some(Feed::starting_after(last)),
            Err(e) => {
                tracing::warn!(error = %e, "the live feed starts once the store answers");
                None
            }
        };
        tokio::spawn(poll(store, feed, Arc::downgrade(&tx)));
        Live { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveResult>> {
        self.tx.subscribe()
    }
}

/// What the poller has seen: the highest number and the lower ones not seen yet.
#[derive(Debug, Default)]
pub struct Feed {
    last: i64,
    holes: BTreeMap<i64, Instant>,
}

impl Feed {
    pub fn starting_after(last: i64) -> Feed {
        Feed {
            last,
            holes: BTreeMap::new(),
        }
    }

    /// Where the next read starts (after this number).
    pub fn from(&self) -> i64 {
        self.holes
            .keys()
            .next()
            .map_or(self.last, |&first| (first - 1).min(self.last))
    }

    /// Takes a read's rows (in number order): the ones not seen before, in order. Numbers
    /// skipped become holes; holes older than [`HOLE_WAIT`] are given up.
    pub fn take<T>(&mut self, rows: Vec<(i64, T)>, now: Instant) -> Vec<(i64, T)> {
        let mut fresh = Vec::new();
        for (seq, row) in rows {
            if seq > self.last {
                for skipped in self.last + 1..seq {
                    self.holes.insert(skipped, now);
                }
                self.last = seq;
                fresh.push((seq, row));
            } else if self.holes.remove(&seq).is_some() {
                fresh.push((seq, row));
            }
        }
        self.holes
            .retain(|_, since| now.duration_since(*since) < HOLE_WAIT);
        fresh
    }
}

async fn poll(
    store: Arc<dyn Store>,
    mut feed: Option<Feed>,
    tx: Weak<broadcast::Sender<Arc<LiveResult>>>,
) {
    loop {
        let Some(tx) = tx.upgrade() else { return };
        let full = match step(store.as_ref(), &mut feed, &tx).await {
            Ok(full) => full,
            Err(e) => {
                tracing::warn!(error = %e, "the live feed could not read the store; retrying");
                false
            }
        };
        drop(tx);
        if !full {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One read: passes on what is new; whether the read was full (more are waiting).
async fn step(
    store: &dyn Store,
    feed: &mut Option<Feed>,
    tx: &broadcast::Sender<Arc<LiveResult>>,
) -> Result<bool, StoreError> {
    let feed = match feed {
        Some(feed) => feed,
        None => feed.insert(Feed::starting_after(store.last_result_event().await?)),
    };
    let rows = store.result_events_after(feed.from(), BATCH).await?;
    let full = rows.len() == BATCH;
    let fresh = feed.take(
        rows.into_iter().map(|(seq, id, _)| (seq, id)).collect(),
        Instant::now(),
    );
    if fresh.is_empty() || tx.receiver_count() == 0 {
        return Ok(full);
    }
    for result in results(store, fresh).await? {
        metrics::counter!(telemetry::LIVE_EVENTS_TOTAL).increment(1);
        // No receiver left since: nothing to do.
        let _ = tx.send(Arc::new(result));
    }
    Ok(full)
}

/// The results of numbered ids, in number order (a result deleted meanwhile is left out).
async fn results(
    store: &dyn Store,
    numbered: Vec<(i64, Uuid)>,
) -> Result<Vec<LiveResult>, StoreError> {
    let ids: Vec<Uuid> = numbered
        .iter()
        .map(|(_, id)| *id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let found: BTreeMap<Uuid, _> = store
        .get_many(&ids)
        .await?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    Ok(numbered
        .into_iter()
        .filter_map(|(seq, id)| {
            found.get(&id).map(|a| LiveResult {
                seq,
                analysis: a.clone(),
            })
        })
        .collect())
}

/// What a client that last saw `after` missed: the results committed since (NG ones unless
/// `all`), in order; `None` when more than [`REPLAY_MAX`] were.
pub async fn missed(
    store: &dyn Store,
    after: i64,
    all: bool,
) -> Result<Option<Vec<LiveResult>>, StoreError> {
    let mut numbered = Vec::new();
    let mut from = after;
    loop {
        let rows = store.result_events_after(from, BATCH).await?;
        let full = rows.len() == BATCH;
        from = rows.last().map_or(from, |r| r.0);
        numbered.extend(
            rows.into_iter()
                .filter(|&(_, _, ng)| all || ng)
                .map(|(seq, id, _)| (seq, id)),
        );
        if numbered.len() > REPLAY_MAX {
            return Ok(None);
        }
        if !full {
            break;
        }
    }
    results(store, numbered).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_committed_late_is_passed_on_once_and_a_lost_one_is_given_up() {
        let t0 = Instant::now();
        let mut feed = Feed::starting_after(10);
        assert_eq!(feed.from(), 10);
        // 12 and 14 are visible, 11 and 13 not yet.
        let fresh = feed.take(vec![(12, 'b'), (14, 'd')], t0);
        assert_eq!(fresh, [(12, 'b'), (14, 'd')]);
        assert_eq!(feed.from(), 10, "reads again from the first hole");
        let fresh = feed.take(vec![(12, 'b'), (13, 'c'), (14, 'd'), (15, 'e')], t0);
        assert_eq!(fresh, [(13, 'c'), (15, 'e')]);
        assert_eq!(feed.from(), 10, "11 is still awaited");
        let later = t0 + HOLE_WAIT;
        assert!(feed.take(Vec::<(i64, char)>::new(), later).is_empty());
        assert_eq!(feed.from(), 15, "11 given up");
    }
}
