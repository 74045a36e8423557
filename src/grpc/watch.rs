//! `WatchRevocations`: the event log as a resumable stream.
//!
//! A stream subscribes to the feed's live broadcast *before* reading any
//! history, then reads history from the database, then switches to live
//! events, skipping any sequence it has already passed. Every event after the
//! cursor is therefore delivered once, in order: an event committed before
//! the subscription is in the history read; one committed after it arrives
//! live. The live buffer is bounded; a consumer that falls behind it is cut
//! off with RESOURCE_EXHAUSTED and resumes from its last sequence. So is one
//! that takes nothing for a checkpoint interval while messages wait: it
//! gives its place among the `max_watchers` streams back. Every ending
//! status comes after everything queued before it, so the `after_seq` it
//! names is always safe to resume from.
//!
//! A stream never claims more than it knows: history pages are re-checked
//! against pruning (a page read while the pruner ran may have a hole: the
//! stream ends with OUT_OF_RANGE), a replica that had to start over (events
//! pruned before it applied them, or a log rewound by a restore or failover)
//! ends its streams the same way, checkpoints pause while the replica cannot
//! prove it is current, and at shutdown streams end with UNAVAILABLE and the
//! position to resume from. The number of streams per replica is bounded.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::convert::millis_to_timestamp;
use crate::access_control::CallerIdentity;
use crate::change_feed::{ChangeFeed, FeedItem, GapCause, WatchRefusal, WatcherPermit};
use crate::domain::{AccountId, UnixMillis};
use crate::proto::RevocationEvent;
use crate::storage::{KeyEvent, StoreError};

pub type EventStream = Pin<Box<dyn Stream<Item = Result<RevocationEvent, Status>> + Send>>;

/// Events read from history per query.
const HISTORY_PAGE: u32 = 500;
/// Messages buffered between the stream task and the transport.
const OUTBOX: usize = 16;

/// The trailing metadata entry of every status that ends a stream (or
/// refuses one): the `after_seq` to start again with, in decimal, so a
/// consumer need not read it out of the message. After OUT_OF_RANGE it is
/// 0, to use once the consumer has resynced its cache.
pub const RESUME_AFTER_SEQ: &str = "keyward-resume-after-seq";

/// `status` with [`RESUME_AFTER_SEQ`] set to `after_seq`.
fn resume_with(mut status: Status, after_seq: u64) -> Status {
    status
        .metadata_mut()
        .insert(RESUME_AFTER_SEQ, MetadataValue::from(after_seq));
    status
}

fn storage_status(error: StoreError, position: u64) -> Status {
    tracing::warn!(%error, "watch stream cannot read the event log");
    resume_with(
        Status::unavailable(format!(
            "the event log is unavailable; resume later with after_seq = {position}"
        )),
        position,
    )
}

/// A checkpoint at `seq`; `at` is when the replica last proved itself
/// current (now, for the first one, sent right after the history read).
fn checkpoint(seq: u64, proved_at: UnixMillis) -> RevocationEvent {
    RevocationEvent {
        seq,
        key_id: String::new(),
        account_id: String::new(),
        kind: "checkpoint".into(),
        at: Some(millis_to_timestamp(proved_at)),
    }
}

/// The shortest checkpoint interval a consumer may ask for.
pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// The longest.
pub const MAX_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(3_600);

/// What a consumer asked of its stream, besides where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// Only this account's events.
    pub account: Option<AccountId>,
    pub checkpoints: Checkpoints,
}

/// How often a stream sends checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoints {
    /// When the stream has been quiet for the server's interval.
    WhenQuiet,
    /// At this interval, busy or not (a consumer that must prove it is
    /// current within a bound asked for it).
    Every(Duration),
}

fn to_proto(event: &KeyEvent) -> RevocationEvent {
    RevocationEvent {
        seq: event.seq,
        key_id: event.key_id.to_string(),
        account_id: event.account_id.to_string(),
        kind: event.kind.as_str().into(),
        at: Some(millis_to_timestamp(event.at)),
    }
}

/// Validates the cursor and starts the stream for `caller`.
pub async fn start(
    feed: Arc<ChangeFeed>,
    after_seq: u64,
    asked: Asked,
    caller: CallerIdentity,
) -> Result<EventStream, Status> {
    let permit = feed
        .admit_watcher(caller.to_string())
        .map_err(|refusal| {
            let status = match refusal {
                WatchRefusal::ReplicaFull(max) => Status::resource_exhausted(format!(
                    "this replica already serves {max} WatchRevocations streams; retry later or on another replica"
                )),
                WatchRefusal::CallerFull(max) => Status::resource_exhausted(format!(
                    "{caller} already has {max} WatchRevocations streams open on this replica; \
                     close one, or share one stream among your consumers"
                )),
            };
            resume_with(status, after_seq)
        })?;
    // Subscribe first: see the module comment.
    let live = feed.subscribe();
    let store = Arc::clone(feed.store());
    let unavailable = |error| storage_status(error, after_seq);
    let latest = store.latest_seq().await.map_err(unavailable)?;
    let start_at = if after_seq == 0 {
        latest
    } else {
        let pruned = store.pruned_through().await.map_err(unavailable)?;
        if after_seq < pruned {
            return Err(resume_with(
                Status::out_of_range(format!(
                    "after_seq {after_seq} is older than the retained history (events up to {pruned} were pruned); \
                     resync your cache and restart with after_seq = 0"
                )),
                0,
            ));
        }
        if after_seq > latest {
            return Err(resume_with(
                Status::out_of_range(format!(
                    "after_seq {after_seq} is ahead of the event log (latest is {latest}); \
                     resync your cache and restart with after_seq = 0"
                )),
                0,
            ));
        }
        after_seq
    };
    let (outbox, receiver) = mpsc::channel(OUTBOX);
    tokio::spawn(run(
        feed,
        live,
        start_at,
        after_seq == 0,
        asked,
        outbox,
        permit,
    ));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

fn gap_status(position: u64) -> Status {
    resume_with(
        Status::out_of_range(format!(
            "events after {position} were pruned before this stream could deliver them; \
             resync your cache and restart with after_seq = 0"
        )),
        0,
    )
}

fn rewound_status(position: u64) -> Status {
    resume_with(
        Status::out_of_range(format!(
            "the event log no longer holds what this stream delivered up to {position} \
             (the database was restored or failed over); resync your cache and restart with after_seq = 0"
        )),
        0,
    )
}

fn shutdown_status(position: u64) -> Status {
    resume_with(
        Status::unavailable(format!(
            "server shutting down; resume with after_seq = {position}"
        )),
        position,
    )
}

/// The stream task's end of the outbox. A send gives up when the consumer
/// has gone, when the server shuts down, and when the consumer has taken
/// nothing for `stall_limit` (the outbox and the transport's window are
/// full): a consumer that stopped reading must not keep its place among the
/// `max_watchers` streams, or the task, for ever.
struct Outbox {
    sender: mpsc::Sender<Result<RevocationEvent, Status>>,
    stall_limit: Duration,
    closing: CancellationToken,
}

/// Why a message was not queued.
enum Stop {
    ConsumerGone,
    Stalled,
    ShuttingDown,
}

impl Outbox {
    async fn send(&self, event: RevocationEvent) -> Result<(), Stop> {
        tokio::select! {
            biased;
            () = self.closing.cancelled() => Err(Stop::ShuttingDown),
            sent = tokio::time::timeout(self.stall_limit, self.sender.send(Ok(event))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::ConsumerGone),
                Err(_) => Err(Stop::Stalled),
            },
        }
    }

    /// The status that ends the stream, `position` being the last sequence
    /// queued (everything up to it reaches the consumer first).
    fn end(&self, stop: Stop, position: u64) -> Option<Status> {
        match stop {
            Stop::ConsumerGone => None,
            Stop::ShuttingDown => Some(shutdown_status(position)),
            Stop::Stalled => {
                tracing::info!(position, "watch consumer stopped reading; cutting it off");
                Some(resume_with(
                    Status::resource_exhausted(format!(
                        "consumer stopped reading: nothing taken for {:?}; resume with after_seq = {position}",
                        self.stall_limit
                    )),
                    position,
                ))
            }
        }
    }
}

async fn run(
    feed: Arc<ChangeFeed>,
    live: broadcast::Receiver<FeedItem>,
    position: u64,
    announce: bool,
    asked: Asked,
    outbox: mpsc::Sender<Result<RevocationEvent, Status>>,
    // Held for the stream's life: it is what bounds the number of streams.
    _permit: WatcherPermit,
) {
    // One slot kept back for the final status, so a stream always ends with
    // one, after everything it queued, without waiting for the consumer.
    let Ok(last) = outbox.clone().reserve_owned().await else {
        return;
    };
    let outbox = Outbox {
        sender: outbox,
        // A consumer is promised a message at least this often; one that
        // cannot take a message for as long has stopped reading.
        stall_limit: feed.settings().checkpoint_interval,
        closing: feed.closing().clone(),
    };
    if let Some(status) = follow(&feed, live, position, announce, asked, &outbox).await {
        let _ = last.send(Err(status));
    }
}

/// Reads one page of history after `position`, and checks it against
/// pruning: if the pruner ran while this page was read (an empty page
/// included), events after `position` may be missing from it.
async fn history_page(feed: &ChangeFeed, position: u64) -> Result<Vec<KeyEvent>, Status> {
    let store = feed.store();
    let page = store
        .events_after(position, HISTORY_PAGE)
        .await
        .map_err(|error| storage_status(error, position))?;
    let pruned = store
        .pruned_through()
        .await
        .map_err(|error| storage_status(error, position))?;
    if pruned > position {
        return Err(gap_status(position));
    }
    Ok(page)
}

/// Sends history, then live events, until the stream ends; returns the
/// status to end it with (`None`: the consumer has gone).
async fn follow(
    feed: &ChangeFeed,
    mut live: broadcast::Receiver<FeedItem>,
    mut position: u64,
    announce: bool,
    Asked {
        account,
        checkpoints,
    }: Asked,
    outbox: &Outbox,
) -> Option<Status> {
    let wanted = |event: &KeyEvent| account.as_ref().is_none_or(|a| *a == event.account_id);
    if announce && let Err(stop) = outbox.send(checkpoint(position, UnixMillis::now())).await {
        return outbox.end(stop, position);
    }

    // History: everything committed after the cursor so far.
    loop {
        let page = tokio::select! {
            () = feed.closing().cancelled() => return Some(shutdown_status(position)),
            page = history_page(feed, position) => page,
        };
        let page = match page {
            Ok(page) if page.is_empty() => break,
            Ok(page) => page,
            Err(status) => return Some(status),
        };
        for event in page {
            if wanted(&event)
                && let Err(stop) = outbox.send(to_proto(&event)).await
            {
                return outbox.end(stop, position);
            }
            position = event.seq;
        }
    }

    // Live, with a checkpoint whenever the stream has been quiet for a while
    // (or at the interval the consumer asked for).
    let (interval, reset_when_busy) = match checkpoints {
        Checkpoints::WhenQuiet => (feed.settings().checkpoint_interval, true),
        Checkpoints::Every(interval) => (interval, false),
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut due = false;
    loop {
        if due {
            // A checkpoint says "everything committed before `at` is at or
            // before `seq`". The feed broadcasts a poll's events before it
            // records the poll's proof, so with the proof read first and
            // nothing left to receive, every event that proof covers has
            // reached `position`. Only a replica that can prove it is
            // current sends one.
            let proof_age = feed.freshness().age();
            if live.is_empty() {
                due = false;
                if let Some(age) = proof_age.filter(|age| *age <= feed.freshness().bound()) {
                    let proved_at = UnixMillis(
                        UnixMillis::now().0 - i64::try_from(age.as_millis()).unwrap_or(i64::MAX),
                    );
                    if let Err(stop) = outbox.send(checkpoint(position, proved_at)).await {
                        return outbox.end(stop, position);
                    }
                }
            }
        }
        tokio::select! {
            () = outbox.sender.closed() => return None,
            () = feed.closing().cancelled() => return Some(shutdown_status(position)),
            _ = ticker.tick() => due = true,
            received = live.recv() => match received {
                Ok(FeedItem::Gap { cause, .. }) => {
                    return Some(match cause {
                        GapCause::Pruned => gap_status(position),
                        GapCause::Rewound => rewound_status(position),
                    });
                }
                Ok(FeedItem::Event(event)) => {
                    if event.seq <= position {
                        continue;
                    }
                    if wanted(&event) {
                        if let Err(stop) = outbox.send(to_proto(&event)).await {
                            return outbox.end(stop, position);
                        }
                        if reset_when_busy {
                            ticker.reset();
                        }
                    }
                    position = event.seq;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(resume_with(
                        Status::resource_exhausted(format!(
                            "consumer too slow: {missed} events overflowed the server's buffer of {}; \
                             resume with after_seq = {position}",
                            feed.settings().watch_buffer
                        )),
                        position,
                    ));
                }
                // The feed outlives every stream (each holds it), so the
                // sender cannot close first; treat it like shutdown anyway.
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
