//! The audit log's writer: requests hand it entries without waiting for the store; it writes
//! them in batches. Its queue is bounded: when the store cannot keep up, entries are dropped and
//! counted (`wiko_cloud_audit_dropped_total`), never the requests.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::store::{AuditEntry, Store};
use crate::telemetry;

/// Entries waiting at most.
const QUEUE: usize = 10_000;
/// Entries written per statement at most.
const BATCH: usize = 256;

enum Message {
    Entry(AuditEntry),
    /// Answers once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(crate) struct Audit {
    queue: mpsc::Sender<Message>,
}

impl Audit {
    /// Starts the writer (a task that ends when every `Audit` handle is dropped).
    pub(crate) fn start(store: Arc<dyn Store>) -> Audit {
        let (queue, mut rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = Vec::new();
                let mut flushed = Vec::new();
                let mut next = Some(first);
                while let Some(message) = next {
                    match message {
                        Message::Entry(e) => batch.push(e),
                        Message::Flush(done) => flushed.push(done),
                    }
                    next = if batch.len() < BATCH {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
                write(store.as_ref(), batch).await;
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Audit { queue }
    }

    /// Records that `actor` did `action`.
    pub(crate) fn record(&self, actor: &str, action: &str, detail: Value) {
        let entry = AuditEntry {
            at: Utc::now(),
            actor: actor.to_string(),
            action: action.to_string(),
            detail,
        };
        if self.queue.try_send(Message::Entry(entry)).is_err() {
            metrics::counter!(telemetry::AUDIT_DROPPED_TOTAL).increment(1);
        }
    }

    /// Waits until everything recorded so far is written (or the writer stopped).
    pub(crate) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Writes a batch, trying a few times while the store is away; then drops it, counted.
async fn write(store: &dyn Store, batch: Vec<AuditEntry>) {
    if batch.is_empty() {
        return;
    }
    for attempt in 0..3u32 {
        match store.audit(batch.clone()).await {
            Ok(()) => return,
            Err(e) if attempt < 2 => {
                warn!(error = %e, "writing the audit log failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => warn!(error = %e, entries = batch.len(), "audit entries dropped"),
        }
    }
    metrics::counter!(telemetry::AUDIT_DROPPED_TOTAL).increment(batch.len() as u64);
}
