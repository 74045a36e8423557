//! WatchRevocations: live delivery, resume without gaps or duplicates,
//! account filter, checkpoints, cursors out of range (also when pruning
//! races the history read), slow and stuck consumers.

use keyward::audit::Actor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use keyward::change_feed::{ChangeFeed, FeedSettings, Freshness};
use keyward::domain::{AccountId, KeyDigest, KeyId, KeyName, UnixMillis};
use keyward::grpc::KeyServiceApi;
use keyward::key_cache::{CacheSettings, KeyCache};
use keyward::proto::key_service_client::KeyServiceClient;
use keyward::proto::key_service_server::KeyService;
use keyward::proto::{self, RevocationEvent};
use keyward::storage::{self, KeyEvent, KeyStore, NewKey, PoolSettings, StoreError};
use tonic::{Code, Streaming};

use crate::helpers::store_decorator::{Decorated, InProcess, StoreHooks, in_process};
use crate::helpers::{Db, TestApp, TestDatabase, spawn_app, spawn_app_with, spawn_on, test_config};
use crate::on_both_databases;

on_both_databases!(
    a_new_watch_starts_with_a_checkpoint_then_live_events,
    resuming_delivers_every_event_once_in_order,
    the_account_filter_keeps_other_accounts_out,
    quiet_streams_get_checkpoints,
    cursors_outside_the_retained_log_are_out_of_range,
    a_slow_consumer_is_cut_off_and_can_resume,
    bad_watch_input_is_invalid_argument,
    a_connected_watcher_ends_with_unavailable_at_shutdown,
    watchers_beyond_the_bound_are_refused,
    pruning_under_the_first_history_read_is_out_of_range,
    pruning_between_history_pages_is_out_of_range,
    a_rewound_log_ends_streams_out_of_range,
    a_consumer_that_stops_reading_is_cut_off_and_frees_its_place,
    checkpoints_pause_while_the_replica_cannot_prove_it_is_current,
);

async fn watch(app: &mut TestApp, after_seq: u64, account: &str) -> Streaming<RevocationEvent> {
    app.keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq,
            account_id: account.into(),
            ..Default::default()
        })
        .await
        .expect("WatchRevocations")
        .into_inner()
}

async fn next(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

/// The next event that is not a checkpoint.
async fn next_event(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    loop {
        let event = next(stream).await;
        if event.kind != "checkpoint" {
            return event;
        }
    }
}

async fn a_new_watch_starts_with_a_checkpoint_then_live_events(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (old, _) = app.create_key("acct_1", &[]).await;
    app.revoke("acct_1", &old.id).await;

    let mut stream = watch(&mut app, 0, "").await;
    let checkpoint = next(&mut stream).await;
    let (key, _) = app.create_key("acct_1", &["orders:read"]).await;
    app.revoke("acct_1", &key.id).await;
    let event = next_event(&mut stream).await;

    assert_eq!(checkpoint.kind, "checkpoint");
    assert!(
        checkpoint.seq >= 1,
        "the checkpoint carries the current sequence"
    );
    assert_eq!(event.kind, "revoked");
    assert_eq!(event.key_id, key.id);
    assert_eq!(event.account_id, "acct_1");
    assert!(
        event.seq > checkpoint.seq,
        "history before the start is not replayed"
    );
    assert!(event.at.is_some());
    app.shutdown().await;
}

async fn resuming_delivers_every_event_once_in_order(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let mut stream = watch(&mut app, 0, "").await;
    let start = next(&mut stream).await.seq;

    let mut expected = Vec::new();
    for i in 0..6 {
        let account = format!("acct_{i}");
        let (key, _) = app.create_key(&account, &[]).await;
        app.revoke(&account, &key.id).await;
        expected.push(key.id);
    }
    let mut received = Vec::new();
    let mut last_seq = start;
    for _ in 0..3 {
        let event = next_event(&mut stream).await;
        last_seq = event.seq;
        received.push(event.key_id);
    }
    drop(stream);

    // More changes while disconnected.
    for i in 6..10 {
        let account = format!("acct_{i}");
        let (key, _) = app.create_key(&account, &[]).await;
        app.revoke(&account, &key.id).await;
        expected.push(key.id);
    }
    let mut resumed = watch(&mut app, last_seq, "").await;
    let mut seqs = vec![last_seq];
    while received.len() < expected.len() {
        let event = next_event(&mut resumed).await;
        seqs.push(event.seq);
        received.push(event.key_id);
    }
    // And live again after the history.
    let (live, _) = app.create_key("acct_live", &[]).await;
    app.revoke("acct_live", &live.id).await;
    let live_event = next_event(&mut resumed).await;

    assert_eq!(received, expected, "every event once, in order");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(live_event.key_id, live.id);
    app.shutdown().await;
}

/// A stream filtered to one account gets that account's events and none of
/// another's, starts with a checkpoint like any other stream, and still gets
/// quiet checkpoints carrying the position past the other accounts' events,
/// so a consumer's cursor advances (README, WatchRevocations).
async fn the_account_filter_keeps_other_accounts_out(db: Db) {
    let mut config = test_config();
    config.feed.checkpoint_interval = Duration::from_millis(200);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let mut mine = watch(&mut app, 0, "acct_mine").await;
    let start = next(&mut mine).await;
    assert_eq!(
        (start.kind.as_str(), start.seq),
        ("checkpoint", 0),
        "a filtered stream starts with a checkpoint at the log's end: {start:?}"
    );

    let (other, _) = app.create_key("acct_other", &[]).await;
    app.revoke("acct_other", &other.id).await;
    let (key, _) = app.create_key("acct_mine", &[]).await;
    app.keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_mine".into(),
            key_id: key.id.clone(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    app.revoke("acct_mine", &key.id).await;
    let (last_other, _) = app.create_key("acct_other", &[]).await;
    app.revoke("acct_other", &last_other.id).await;

    let first = next_event(&mut mine).await;
    let second = next_event(&mut mine).await;
    assert_eq!(
        (first.kind.as_str(), first.key_id.as_str()),
        ("scopes_changed", key.id.as_str())
    );
    assert_eq!(
        (second.kind.as_str(), second.key_id.as_str()),
        ("revoked", key.id.as_str())
    );
    // The log ends with the other account's second revocation (seq 4): a
    // quiet checkpoint reaches it, and nothing of acct_other comes first.
    let end = 4;
    let deadline = Instant::now() + Duration::from_secs(30);
    let quiet = loop {
        let message = next(&mut mine).await;
        assert_eq!(
            message.kind, "checkpoint",
            "another account's event: {message:?}"
        );
        assert!(message.seq <= end, "a checkpoint past the log: {message:?}");
        if message.seq == end {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint reached seq {end} (the last other-account event); last {message:?}"
        );
    };
    assert!(
        quiet.seq > second.seq,
        "the cursor advanced past filtered events"
    );
    app.shutdown().await;
}

async fn quiet_streams_get_checkpoints(db: Db) {
    let mut config = test_config();
    config.feed.checkpoint_interval = Duration::from_millis(100);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let mut stream = watch(&mut app, 0, "").await;
    let first = next(&mut stream).await;
    let (key, _) = app.create_key("acct_1", &[]).await;
    app.revoke("acct_1", &key.id).await;
    let event = next_event(&mut stream).await;
    let quiet = next(&mut stream).await;

    assert_eq!(first.kind, "checkpoint");
    assert_eq!(quiet.kind, "checkpoint");
    assert_eq!(
        quiet.seq, event.seq,
        "a checkpoint carries the position reached"
    );
    app.shutdown().await;
}

async fn cursors_outside_the_retained_log_are_out_of_range(db: Db) {
    let mut config = test_config();
    config.feed.retention = Duration::from_millis(1);
    config.feed.prune_interval = Duration::from_millis(50);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    for i in 0..3 {
        let account = format!("acct_{i}");
        let (key, _) = app.create_key(&account, &[]).await;
        app.revoke(&account, &key.id).await;
    }
    // Wait for the pruner to remove them.
    let pruned = crate::helpers::eventually(Duration::from_secs(5), async || {
        match app
            .keys
            .watch_revocations(proto::WatchRevocationsRequest {
                after_seq: 1,
                account_id: String::new(),
                ..Default::default()
            })
            .await
        {
            Err(status) => status.code() == Code::OutOfRange,
            Ok(_) => false,
        }
    })
    .await;
    assert!(pruned, "a pruned cursor is OUT_OF_RANGE");
    let status = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: 1,
            account_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("resync"), "{}", status.message());
    assert_eq!(resume_after_seq(&status), Some(0), "resync, then 0");

    let ahead = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: 1_000_000,
            account_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), Code::OutOfRange);
    assert_eq!(resume_after_seq(&ahead), Some(0));
    // A fresh start still works.
    let mut stream = watch(&mut app, 0, "").await;
    assert_eq!(next(&mut stream).await.kind, "checkpoint");
    app.shutdown().await;
}

async fn a_slow_consumer_is_cut_off_and_can_resume(db: Db) {
    let mut config = test_config();
    config.feed.watch_buffer = 4;
    let Some(database) = TestDatabase::create(db).await else {
        return;
    };
    let mut app = spawn_on(database, config).await;
    // A client that accepts little data before it reads.
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{}", app_addr(&app)))
        .unwrap()
        .initial_stream_window_size(Some(256))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut slow_client = KeyServiceClient::new(narrow);
    let mut stream = slow_client
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: 0,
            account_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let start = next(&mut stream).await.seq;

    // Many events while the consumer does not read.
    for i in 0..60 {
        let account = format!("acct_{i}");
        let (key, _) = app.create_key(&account, &[]).await;
        app.revoke(&account, &key.id).await;
    }
    let mut last_seq = start;
    let mut received = 0u64;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(event))) => {
                last_seq = event.seq;
                received += u64::from(event.kind != "checkpoint");
            }
            Ok(Err(status)) => break status,
            other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("resume with after_seq"),
        "{}",
        status.message()
    );
    assert_eq!(
        resume_after_seq(&status),
        Some(last_seq),
        "the trailers name the last sequence received"
    );

    // Resuming from the position the trailers name delivers the rest: every
    // revocation, counted (sequence numbers need not be contiguous).
    let delivered_before = received;
    let mut resumed = watch(&mut app, resume_after_seq(&status).unwrap(), "").await;
    let mut previous = last_seq;
    let mut delivered_after = 0;
    while delivered_before + delivered_after < 60 {
        let event = next_event(&mut resumed).await;
        assert!(event.seq > previous);
        previous = event.seq;
        delivered_after += 1;
    }
    assert!(delivered_after > 0);
    app.shutdown().await;
}

async fn a_connected_watcher_ends_with_unavailable_at_shutdown(db: Db) {
    let mut config = test_config();
    config.server.shutdown_grace = Duration::from_secs(60);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let mut stream = watch(&mut app, 0, "").await;
    let position = next(&mut stream).await.seq;

    // Shutting down must not wait out the 60 s grace for the open stream.
    tokio::time::timeout(Duration::from_secs(20), app.shutdown())
        .await
        .expect("shutdown does not wait for watch streams");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends");

    let status = ended.expect_err("ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("resume with after_seq = {position}")),
        "{}",
        status.message()
    );
    assert_eq!(resume_after_seq(&status), Some(position));
}

async fn watchers_beyond_the_bound_are_refused(db: Db) {
    let mut config = test_config();
    config.feed.max_watchers = 2;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let mut first = watch(&mut app, 0, "").await;
    let _second = watch(&mut app, 0, "").await;
    next(&mut first).await;

    let refused = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: 0,
            account_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("2 WatchRevocations streams"),
        "{}",
        refused.message()
    );
    assert_eq!(
        resume_after_seq(&refused),
        Some(0),
        "the after_seq it asked"
    );

    // A closed stream frees its place.
    drop(first);
    let admitted = crate::helpers::eventually(Duration::from_secs(5), async || {
        app.keys
            .watch_revocations(proto::WatchRevocationsRequest {
                after_seq: 0,
                account_id: String::new(),
                ..Default::default()
            })
            .await
            .is_ok()
    })
    .await;
    assert!(admitted, "a place was freed");
    app.shutdown().await;
}

/// The `after_seq` a stream's ending status says to resume with, as
/// structured data (trailing metadata) rather than text.
fn resume_after_seq(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get("keyward-resume-after-seq")
        .map(|value| value.to_str().unwrap().parse().unwrap())
}

fn app_addr(app: &TestApp) -> String {
    app.addr().to_string()
}

async fn bad_watch_input_is_invalid_argument(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let status = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: 0,
            account_id: "has space".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    crate::helpers::assert_invalid_argument(&status, "account_id");
    app.shutdown().await;
}

/// History reads cut to small pages, and everything pruned just before the
/// `prune_on_read`-th history read: the pruner running on another replica
/// at the worst moment.
struct PrunesUnderHistory {
    page_cap: u32,
    prune_on_read: usize,
    reads: AtomicUsize,
}

#[async_trait]
impl StoreHooks for PrunesUnderHistory {
    async fn events_after(
        &self,
        store: &dyn KeyStore,
        after: u64,
        limit: u32,
    ) -> Result<Vec<KeyEvent>, StoreError> {
        if self.reads.fetch_add(1, Ordering::SeqCst) + 1 == self.prune_on_read {
            store.prune_events(UnixMillis(i64::MAX)).await?;
        }
        store.events_after(after, limit.min(self.page_cap)).await
    }
}

/// A database with `events` revocations in the log (times far in the past,
/// so the pruner may take them all), and a KeyService whose watch history
/// reads go through `PrunesUnderHistory`.
async fn service_pruning_on_read(
    db: Db,
    events: usize,
    prune_on_read: usize,
) -> Option<(KeyServiceApi, Arc<TestDatabase>)> {
    let database = TestDatabase::create(db).await?;
    let real = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    for i in 0..events {
        let account = AccountId::parse(&format!("acct_{i}")).unwrap();
        let key = real
            .create_key(
                NewKey {
                    id: KeyId::generate(),
                    account_id: account.clone(),
                    name: KeyName::parse("k").unwrap(),
                    digest: KeyDigest::of(&format!("cc_{i}")),
                    start: "cc_000000".into(),
                    scopes: vec![],
                    rate_limit: None,
                    quota: None,
                    created_at: UnixMillis(1),
                    expires_at: None,
                    metadata: Default::default(),
                    allowed_networks: Vec::new(),
                    rotated_from: None,
                },
                10,
                &Actor::in_process(),
            )
            .await
            .unwrap()
            .record;
        real.revoke_key(
            &account,
            &key.id,
            UnixMillis(1_000 + i as i64),
            &Actor::in_process(),
        )
        .await
        .unwrap();
    }
    let store: Arc<dyn KeyStore> = Decorated::new(
        Arc::clone(&real),
        PrunesUnderHistory {
            page_cap: 2,
            prune_on_read,
            reads: AtomicUsize::new(0),
        },
    );
    let cache = Arc::new(KeyCache::new(&CacheSettings::default()));
    let settings = FeedSettings {
        // A stream that wrongly went live would soon vouch for its position.
        checkpoint_interval: Duration::from_millis(100),
        ..FeedSettings::default()
    };
    let feed = ChangeFeed::start(Arc::clone(&store), real, Arc::clone(&cache), settings)
        .await
        .unwrap();
    let freshness = Arc::new(Freshness::new(Duration::from_secs(600)));
    freshness.confirm(Instant::now());
    let InProcess {
        authenticator,
        manager,
        ..
    } = in_process(Arc::clone(&store), cache, freshness);
    let api = KeyServiceApi::new(Arc::new(authenticator), Arc::new(manager), feed);
    Some((api, database))
}

/// Reads a stream to its end: the events, and the status it ended with
/// (`None`: still open after a quiet second, or ended without an error).
async fn drain(
    stream: &mut (impl futures_util::Stream<Item = Result<RevocationEvent, tonic::Status>> + Unpin),
) -> (Vec<RevocationEvent>, Option<tonic::Status>) {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            Ok(Some(Ok(event))) if event.kind == "checkpoint" => {
                events.push(event);
                return (events, None);
            }
            Ok(Some(Ok(event))) => events.push(event),
            Ok(Some(Err(status))) => return (events, Some(status)),
            Ok(None) | Err(_) => return (events, None),
        }
    }
}

/// The cursor is valid when the stream starts (pruned through 0, latest 6),
/// then the whole log is pruned just before the first history read, which
/// comes back empty: the stream must say OUT_OF_RANGE, not go live as if
/// events 4 to 6 never happened.
async fn pruning_under_the_first_history_read_is_out_of_range(db: Db) {
    let Some((api, _database)) = service_pruning_on_read(db, 6, 1).await else {
        return;
    };
    let mut stream = api
        .watch_revocations(tonic::Request::new(proto::WatchRevocationsRequest {
            after_seq: 3,
            account_id: String::new(),
            ..Default::default()
        }))
        .await
        .expect("the cursor is in range at the start")
        .into_inner();

    let (events, ended) = drain(&mut stream).await;

    assert!(events.is_empty(), "nothing was delivered: {events:?}");
    let status = ended.expect("the stream ends with a status");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("resync"), "{}", status.message());
    assert_eq!(resume_after_seq(&status), Some(0));
}

/// The first page (two events) is delivered, then the rest of the log is
/// pruned before the second page is read: the stream ends OUT_OF_RANGE
/// after the events it did deliver.
async fn pruning_between_history_pages_is_out_of_range(db: Db) {
    let Some((api, _database)) = service_pruning_on_read(db, 6, 2).await else {
        return;
    };
    let mut stream = api
        .watch_revocations(tonic::Request::new(proto::WatchRevocationsRequest {
            after_seq: 1,
            account_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();

    let (events, ended) = drain(&mut stream).await;

    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        [2, 3],
        "the first page, then nothing it cannot vouch for"
    );
    let status = ended.expect("the stream ends with a status");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(resume_after_seq(&status), Some(0));
    assert!(
        status.message().contains("events after 3"),
        "{}",
        status.message()
    );
}

/// The database is put back to an older copy under a live stream: the
/// replica notices and the stream ends OUT_OF_RANGE, telling the client to
/// resync, instead of waiting for sequence numbers it has already passed.
async fn a_rewound_log_ends_streams_out_of_range(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let mut stream = watch(&mut app, 0, "").await;
    next(&mut stream).await;
    for i in 0..3 {
        let account = format!("acct_{i}");
        let (key, _) = app.create_key(&account, &[]).await;
        app.revoke(&account, &key.id).await;
    }
    let mut position = 0;
    for _ in 0..3 {
        position = next_event(&mut stream).await.seq;
    }

    crate::revocation::rewind_log(&app.database, 1).await;
    let (key, _) = app.create_key("acct_after", &[]).await;
    app.revoke("acct_after", &key.id).await;

    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(event))) => assert_eq!(event.kind, "checkpoint", "{event:?}"),
            Ok(Err(status)) => break status,
            other => panic!("expected OUT_OF_RANGE, got {other:?}"),
        }
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(resume_after_seq(&status), Some(0));
    assert!(
        status
            .message()
            .contains(&format!("delivered up to {position}")),
        "{}",
        status.message()
    );
    assert!(status.message().contains("resync"), "{}", status.message());
    // A fresh start works.
    let mut fresh = watch(&mut app, 0, "").await;
    assert_eq!(next(&mut fresh).await.seq, 2);
    app.shutdown().await;
}

/// A client opens a stream and reads nothing while many events are
/// produced. The server must not let it keep the only watcher place: after
/// a checkpoint interval of taking nothing it is cut off, and a new stream
/// is admitted. When the stuck client reads at last, it gets what was queued,
/// then RESOURCE_EXHAUSTED naming a position from which resuming delivers
/// every remaining event.
async fn a_consumer_that_stops_reading_is_cut_off_and_frees_its_place(db: Db) {
    let mut config = test_config();
    config.feed.max_watchers = 1;
    // How long a stream may take nothing while messages wait: long enough
    // that this test's own streams, read as fast as the test runs, are not
    // cut off when its thread is descheduled.
    config.feed.checkpoint_interval = Duration::from_secs(1);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    // A client that accepts little data before it reads.
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{}", app_addr(&app)))
        .unwrap()
        .initial_stream_window_size(Some(256))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut stuck = KeyServiceClient::new(narrow)
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: 0,
            account_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refused = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "the place is taken"
    );

    let total = 60;
    for i in 0..total {
        let account = format!("acct_{i}");
        let (key, _) = app.create_key(&account, &[]).await;
        app.revoke(&account, &key.id).await;
    }
    let admitted = crate::helpers::eventually(Duration::from_secs(20), async || {
        app.keys
            .watch_revocations(proto::WatchRevocationsRequest::default())
            .await
            .is_ok()
    })
    .await;
    assert!(admitted, "the stuck consumer still holds the only place");

    let mut last_seq = 0;
    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stuck.message()).await {
            Ok(Ok(Some(event))) => {
                last_seq = event.seq;
                received += usize::from(event.kind != "checkpoint");
            }
            Ok(Err(status)) => break status,
            other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("resume with after_seq = {last_seq}")),
        "{}",
        status.message()
    );
    assert_eq!(resume_after_seq(&status), Some(last_seq));
    assert!(received < total, "it was cut off before the end");
    // The probe stream above frees its place once the server sees it closed.
    let mut resumed = None;
    crate::helpers::eventually(Duration::from_secs(10), async || {
        resumed = app
            .keys
            .watch_revocations(proto::WatchRevocationsRequest {
                after_seq: last_seq,
                account_id: String::new(),
                ..Default::default()
            })
            .await
            .ok()
            .map(tonic::Response::into_inner);
        resumed.is_some()
    })
    .await;
    let mut resumed = resumed.expect("a resumed stream is admitted");
    let mut previous = last_seq;
    while received < total {
        let event = next_event(&mut resumed).await;
        assert!(event.seq > previous);
        previous = event.seq;
        received += 1;
    }
    app.shutdown().await;
}

/// The next message within `limit`, or `None`; the stream must not end.
async fn next_within(
    stream: &mut (impl futures_util::Stream<Item = Result<RevocationEvent, tonic::Status>> + Unpin),
    limit: Duration,
) -> Option<RevocationEvent> {
    match tokio::time::timeout(limit, stream.next()).await {
        Ok(Some(Ok(event))) => Some(event),
        Ok(other) => panic!("the stream ended: {other:?}"),
        Err(_) => None,
    }
}

/// "Checkpoints pause while the replica cannot prove it is caught up." A
/// KeyService over the real database whose follower polls only when the
/// test says so: checkpoints come while its proof from startup is fresh,
/// none is made after that proof has expired, and they resume as soon as a
/// poll proves the replica current again. (The stream is read throughout;
/// each checkpoint carries the time it was made.)
async fn checkpoints_pause_while_the_replica_cannot_prove_it_is_current(db: Db) {
    use std::time::SystemTime;
    let interval = Duration::from_millis(250);
    let bound = Duration::from_secs(5);
    let Some(database) = TestDatabase::create(db).await else {
        return;
    };
    let store = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let cache = Arc::new(KeyCache::new(&CacheSettings::default()));
    let feed = ChangeFeed::start(
        Arc::clone(&store),
        Arc::clone(&store),
        Arc::clone(&cache),
        FeedSettings {
            checkpoint_interval: interval,
            // The proof made at start lasts this long; nothing renews it
            // until the test polls.
            freshness_bound: bound,
            ..FeedSettings::default()
        },
    )
    .await
    .unwrap();
    // The proof was made before this, so it has expired by `stale_from`.
    let stale_from = SystemTime::now() + bound + Duration::from_millis(1);
    let freshness = Arc::new(Freshness::new(Duration::from_secs(600)));
    freshness.confirm(Instant::now());
    let InProcess {
        authenticator,
        manager,
        ..
    } = in_process(Arc::clone(&store), cache, freshness);
    let api = KeyServiceApi::new(
        Arc::new(authenticator),
        Arc::new(manager),
        Arc::clone(&feed),
    );
    let mut stream = api
        .watch_revocations(tonic::Request::new(proto::WatchRevocationsRequest {
            after_seq: 0,
            account_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let made_at = |event: &RevocationEvent| SystemTime::try_from(event.at.unwrap()).unwrap();
    let start = next_within(&mut stream, Duration::from_secs(30))
        .await
        .expect("the start checkpoint");
    assert_eq!(start.kind, "checkpoint");

    // Fresh: quiet checkpoints come.
    let quiet = next_within(&mut stream, Duration::from_secs(30))
        .await
        .expect("a quiet checkpoint while fresh");
    assert_eq!(quiet.kind, "checkpoint");

    // Read on until twelve intervals past the expiry: no checkpoint made
    // after it (one decided just before may be made up to 1 s late).
    let latest_allowed = stale_from + Duration::from_secs(1);
    let mut checkpoints = 1;
    while SystemTime::now() < latest_allowed + interval * 12 {
        if let Some(event) = next_within(&mut stream, interval).await {
            assert_eq!(event.kind, "checkpoint", "{event:?}");
            checkpoints += 1;
            assert!(
                made_at(&event) <= latest_allowed,
                "a checkpoint made {:?} after the replica's proof expired: {event:?}",
                made_at(&event).duration_since(stale_from).unwrap()
            );
        }
    }
    assert!(!feed.freshness().is_fresh());
    assert!(checkpoints >= 2, "checkpoints came while fresh");

    // Proved current again: they resume.
    feed.poll_once().await.unwrap();
    let resumed = next_within(&mut stream, Duration::from_secs(30))
        .await
        .expect("checkpoints resume once the replica is current");
    assert_eq!(resumed.kind, "checkpoint");
    assert_eq!(resumed.seq, start.seq);
}
