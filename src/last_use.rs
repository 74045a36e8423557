//! `last_used_at`: the hot path notes each use in memory (an atomic on the
//! cached key, and the key queued once per flush interval); a background task
//! writes the queued keys to the database in one batch per interval, and once
//! more at shutdown. No database write happens on the request path.
//!
//! The same pass writes how much of their usage quotas the queued keys
//! have used (`quotas`), so on the local backend a crash loses at most one
//! flush interval of counted uses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::domain::{KeyId, UnixMillis};
use crate::key_cache::CachedKey;
use crate::settings::{SettingError, seconds};
use crate::storage::{KeyStore, QuotaNote};

/// Keys written per statement.
const BATCH: usize = 10_000;

pub const DEFAULT_FLUSH_INTERVAL_SECONDS: f64 = 5.0;

/// `[last_used]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLastUsed {
    pub flush_interval_seconds: Option<f64>,
}

/// Validates `[last_used]`: how often noted uses are written.
pub fn flush_interval_from_raw(raw: RawLastUsed) -> Result<Duration, SettingError> {
    seconds(
        raw.flush_interval_seconds
            .unwrap_or(DEFAULT_FLUSH_INTERVAL_SECONDS),
        0.01,
        3_600.0,
    )
    .map_err(SettingError::at("last_used.flush_interval_seconds"))
}

/// The hot path's handle.
#[derive(Clone)]
pub struct LastUseRecorder {
    queue: mpsc::UnboundedSender<Arc<CachedKey>>,
}

/// The flusher's end of the queue.
pub struct LastUseFlusher {
    queue: mpsc::UnboundedReceiver<Arc<CachedKey>>,
    store: Arc<dyn KeyStore>,
}

/// A recorder and the flusher that drains it. The queue holds each key at
/// most once until the flusher takes it, so its length is bounded by the
/// number of keys in use.
pub fn last_use_channel(store: Arc<dyn KeyStore>) -> (LastUseRecorder, LastUseFlusher) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        LastUseRecorder { queue: tx },
        LastUseFlusher { queue: rx, store },
    )
}

impl LastUseRecorder {
    pub fn record(&self, key: &Arc<CachedKey>, now: UnixMillis) {
        if key.note_use(now) {
            // Only fails after shutdown, when nothing is flushed any more.
            let _ = self.queue.send(Arc::clone(key));
        }
    }
}

impl LastUseFlusher {
    /// Writes everything queued so far, in batches of [`BATCH`] keys (so a
    /// million keys used since the last flush cost neither a million-row
    /// transaction nor its memory at once); returns how many were written.
    pub async fn flush(&mut self) -> usize {
        let mut written = 0;
        loop {
            let mut latest: HashMap<KeyId, UnixMillis> = HashMap::new();
            let mut quotas: Vec<QuotaNote> = Vec::new();
            let mut taken = 0;
            while taken < BATCH {
                let Ok(key) = self.queue.try_recv() else {
                    break;
                };
                taken += 1;
                if let Some(at) = key.take_use() {
                    let slot = latest.entry(key.key_id()).or_insert(at);
                    *slot = (*slot).max(at);
                }
                if let Some((quota, usage)) = key
                    .quota_slot()
                    .and_then(|slot| slot.counter())
                    .and_then(|counter| counter.take_pending())
                {
                    quotas.push(QuotaNote {
                        id: key.key_id(),
                        quota,
                        usage,
                    });
                }
            }
            if !quotas.is_empty()
                && let Err(error) = self.store.record_quota_usage(&quotas).await
            {
                // Not retried: the next flush writes the count as it is then.
                tracing::warn!(%error, keys = quotas.len(), "could not record quota use");
            }
            if latest.is_empty() {
                if taken == 0 {
                    return written;
                }
                continue;
            }
            let batch: Vec<(KeyId, UnixMillis)> = latest.into_iter().collect();
            match self.store.record_last_used(&batch).await {
                Ok(()) => written += batch.len(),
                // Dropped, not retried: a later use records a later time anyway.
                Err(error) => {
                    tracing::warn!(%error, keys = batch.len(), "could not record last-use times");
                }
            }
        }
    }

    /// Flushes every `interval` until `shutdown` resolves, then once more.
    /// The first flush is one interval after the start (there is nothing to
    /// write before the first use), so what a use that follows startup
    /// reaches the database by is known: the tick one interval on, or the
    /// flush at shutdown.
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => { self.flush().await; }
                () = &mut shutdown => break,
            }
        }
        let written = self.flush().await;
        tracing::debug!(written, "flushed last-use times at shutdown");
    }
}
