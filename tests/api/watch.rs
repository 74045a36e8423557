//! WatchRevocations: live delivery, resume without gaps or duplicates,
//! account filter, checkpoints, cursors out of range, slow consumers.

use std::time::Duration;

use keyward::proto::key_service_client::KeyServiceClient;
use keyward::proto::{self, RevocationEvent};
use tonic::{Code, Streaming};

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
);

async fn watch(app: &mut TestApp, after_seq: u64, account: &str) -> Streaming<RevocationEvent> {
    app.keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq,
            account_id: account.into(),
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

async fn the_account_filter_keeps_other_accounts_out(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let mut mine = watch(&mut app, 0, "acct_mine").await;
    next(&mut mine).await;

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
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("resync"), "{}", status.message());

    let ahead = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: 1_000_000,
            account_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), Code::OutOfRange);
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

    // Resuming from the last sequence received delivers the rest: every
    // revocation, counted (sequence numbers need not be contiguous).
    let delivered_before = received;
    let mut resumed = watch(&mut app, last_seq, "").await;
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
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("2 WatchRevocations streams"),
        "{}",
        refused.message()
    );

    // A closed stream frees its place.
    drop(first);
    let admitted = crate::helpers::eventually(Duration::from_secs(5), async || {
        app.keys
            .watch_revocations(proto::WatchRevocationsRequest {
                after_seq: 0,
                account_id: String::new(),
            })
            .await
            .is_ok()
    })
    .await;
    assert!(admitted, "a place was freed");
    app.shutdown().await;
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
        })
        .await
        .unwrap_err();
    crate::helpers::assert_invalid_argument(&status, "account_id");
    app.shutdown().await;
}
