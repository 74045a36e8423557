//! One conformance suite for the `KeyStore` trait, run against SQLite and
//! PostgreSQL, so the backends cannot drift apart.

use keyward::audit::Actor;
use std::sync::Arc;
use std::time::Duration;

use keyward::domain::{
    AccountId, KeyDigest, KeyId, KeyName, Quota, QuotaUsage, RateLimit, Refill, UnixMillis,
};
use keyward::storage::{
    self, EventKind, KeyStore, KeyUpdate, NewKey, PoolSettings, QuotaNote, StoreError,
};

use crate::helpers::{Db, TestDatabase};
use crate::on_both_databases;

on_both_databases!(
    created_keys_are_found_by_digest_id_and_account,
    revocation_is_logged_once,
    updates_log_one_event_per_change,
    events_are_read_in_order_from_any_point,
    pruning_removes_a_prefix_and_remembers_it,
    last_use_never_moves_backwards,
    quota_use_only_moves_forward_against_its_own_quota,
    the_key_limit_is_atomic,
    account_scoping_is_enforced_by_the_store,
    wakeups_follow_appends,
);

async fn open(db: Db) -> Option<(Arc<TestDatabase>, Arc<dyn KeyStore>)> {
    let database = TestDatabase::create(db).await?;
    let store = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .expect("open store");
    Some((database, store))
}

fn account(name: &str) -> AccountId {
    AccountId::parse(name).unwrap()
}

fn new_key(account_name: &str, secret: &str) -> NewKey {
    NewKey {
        id: KeyId::generate(),
        account_id: account(account_name),
        name: KeyName::parse("k").unwrap(),
        digest: KeyDigest::of(secret),
        start: "cc_123456".into(),
        scopes: vec!["orders:read".into(), "traders:write".into()],
        rate_limit: None,
        quota: None,
        created_at: UnixMillis::now(),
        expires_at: None,
        metadata: Default::default(),
        allowed_networks: Vec::new(),
        rotated_from: None,
    }
}

async fn created_keys_are_found_by_digest_id_and_account(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let mut key = new_key("acct_1", "cc_secret_1");
    key.rate_limit = Some(RateLimit::new(5, 10).unwrap());
    key.expires_at = Some(UnixMillis::now().saturating_add_millis(60_000));
    let created = store
        .create_key(key.clone(), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;

    assert_eq!(created.id, key.id);
    assert_eq!(created.scopes, key.scopes);
    let by_digest = store.find_by_digest(&key.digest).await.unwrap().unwrap();
    let by_id = store.find_by_id(&key.id).await.unwrap().unwrap();
    let in_account = store.get_key(&key.account_id, &key.id).await.unwrap();
    assert_eq!(by_digest, created);
    assert_eq!(by_id, created);
    assert_eq!(in_account, created);
    assert_eq!(by_digest.rate_limit, key.rate_limit);
    assert!(
        store
            .find_by_digest(&KeyDigest::of("other"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_by_id(&KeyId::generate())
            .await
            .unwrap()
            .is_none()
    );
}

async fn revocation_is_logged_once(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let key = store
        .create_key(new_key("acct_1", "s1"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    let before = store.latest_seq().await.unwrap();

    let revoked = store
        .revoke_key(
            &key.account_id,
            &key.id,
            UnixMillis(42),
            &Actor::in_process(),
        )
        .await
        .unwrap()
        .record;
    let again = store
        .revoke_key(
            &key.account_id,
            &key.id,
            UnixMillis(99),
            &Actor::in_process(),
        )
        .await
        .unwrap()
        .record;

    assert_eq!(revoked.revoked_at, Some(UnixMillis(42)));
    assert_eq!(
        again.revoked_at,
        Some(UnixMillis(42)),
        "second revoke changes nothing"
    );
    let events = store.events_after(before, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Revoked);
    assert_eq!(events[0].key_id, key.id);
    assert_eq!(events[0].digest, key.digest);
    assert_eq!(store.latest_seq().await.unwrap(), events[0].seq);
}

async fn updates_log_one_event_per_change(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let key = store
        .create_key(new_key("acct_1", "s1"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    let before = store.latest_seq().await.unwrap();

    let updated = store
        .update_key(
            &key.account_id,
            &key.id,
            KeyUpdate {
                name: Some(KeyName::parse("renamed").unwrap()),
                scopes: Some(vec!["portfolio:read".into()]),
                rate_limit: Some(Some(RateLimit::new(1, 1).unwrap())),
                ..Default::default()
            },
            UnixMillis(7),
            &Actor::in_process(),
        )
        .await
        .unwrap()
        .record;
    let unchanged = store
        .update_key(
            &key.account_id,
            &key.id,
            KeyUpdate {
                name: Some(KeyName::parse("renamed").unwrap()),
                ..KeyUpdate::default()
            },
            UnixMillis(8),
            &Actor::in_process(),
        )
        .await
        .unwrap()
        .record;

    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.scopes, ["portfolio:read"]);
    assert_eq!(
        store.get_key(&key.account_id, &key.id).await.unwrap(),
        updated
    );
    assert_eq!(unchanged, updated);
    let kinds: Vec<EventKind> = store
        .events_after(before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::ScopesChanged,
            EventKind::RateLimitChanged,
            EventKind::Renamed
        ],
        "no event for a change that changes nothing"
    );

    store
        .revoke_key(
            &key.account_id,
            &key.id,
            UnixMillis(9),
            &Actor::in_process(),
        )
        .await
        .unwrap();
    let refused = store
        .update_key(
            &key.account_id,
            &key.id,
            KeyUpdate::default(),
            UnixMillis(10),
            &Actor::in_process(),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::KeyRevoked), "{refused:?}");
}

async fn events_are_read_in_order_from_any_point(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let start = store.latest_seq().await.unwrap();
    // A revocation's revision is the sequence of the event it logged.
    let mut logged = Vec::new();
    for i in 0..25 {
        let created = store
            .create_key(
                new_key(&format!("acct_{i}"), &format!("s{i}")),
                10,
                &Actor::in_process(),
            )
            .await
            .unwrap();
        let revoked = store
            .revoke_key(
                &created.record.account_id,
                &created.record.id,
                UnixMillis::now(),
                &Actor::in_process(),
            )
            .await
            .unwrap();
        logged.push((revoked.revision, created.record.id, "revoked"));
    }

    let all = store.events_after(start, 1000).await.unwrap();
    let paged_first = store.events_after(start, 10).await.unwrap();
    let paged_rest = store
        .events_after(paged_first.last().unwrap().seq, 1000)
        .await
        .unwrap();

    assert_eq!(
        all.iter()
            .map(|e| (e.seq, e.key_id.clone(), e.kind.as_str()))
            .collect::<Vec<_>>(),
        logged
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!([paged_first, paged_rest].concat(), all);
    assert!(
        store
            .events_after(all.last().unwrap().seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn pruning_removes_a_prefix_and_remembers_it(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let key_a = store
        .create_key(new_key("acct_1", "a"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    let key_b = store
        .create_key(new_key("acct_1", "b"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    store
        .revoke_key(
            &key_a.account_id,
            &key_a.id,
            UnixMillis(1_000),
            &Actor::in_process(),
        )
        .await
        .unwrap();
    store
        .revoke_key(
            &key_b.account_id,
            &key_b.id,
            UnixMillis(5_000),
            &Actor::in_process(),
        )
        .await
        .unwrap();
    let latest = store.latest_seq().await.unwrap();

    let deleted = store.prune_events(UnixMillis(2_000)).await.unwrap();

    assert_eq!(deleted, 1);
    let remaining = store.events_after(0, 100).await.unwrap();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].key_id, key_b.id);
    assert_eq!(store.pruned_through().await.unwrap(), remaining[0].seq - 1);
    assert_eq!(store.prune_events(UnixMillis(2_000)).await.unwrap(), 0);

    // Everything pruned: the latest sequence is still known, and new events
    // continue after it rather than reusing numbers.
    store.prune_events(UnixMillis(10_000)).await.unwrap();
    assert_eq!(store.latest_seq().await.unwrap(), latest);
    let key_c = store
        .create_key(new_key("acct_1", "c"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    store
        .revoke_key(
            &key_c.account_id,
            &key_c.id,
            UnixMillis::now(),
            &Actor::in_process(),
        )
        .await
        .unwrap();
    assert!(store.latest_seq().await.unwrap() > latest);
}

async fn last_use_never_moves_backwards(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let key = store
        .create_key(new_key("acct_1", "s"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    let other = store
        .create_key(new_key("acct_1", "t"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;

    store
        .record_last_used(&[
            (key.id.clone(), UnixMillis(2_000)),
            (other.id.clone(), UnixMillis(5)),
        ])
        .await
        .unwrap();
    store
        .record_last_used(&[(key.id.clone(), UnixMillis(1_000))])
        .await
        .unwrap();
    store.record_last_used(&[]).await.unwrap();

    let stored = store.get_key(&key.account_id, &key.id).await.unwrap();
    assert_eq!(stored.last_used_at, Some(UnixMillis(2_000)));
    let stored_other = store.get_key(&other.account_id, &other.id).await.unwrap();
    assert_eq!(stored_other.last_used_at, Some(UnixMillis(5)));

    // A key listed twice in one batch counts its latest time, whether it
    // comes first or last; the other key's entry between them is its own.
    for (first, second, latest) in [(9_000, 7_000, 9_000), (7_000, 9_500, 9_500)] {
        store
            .record_last_used(&[
                (key.id.clone(), UnixMillis(first)),
                (other.id.clone(), UnixMillis(6)),
                (key.id.clone(), UnixMillis(second)),
            ])
            .await
            .unwrap();
        let stored = store.get_key(&key.account_id, &key.id).await.unwrap();
        assert_eq!(stored.last_used_at, Some(UnixMillis(latest)));
    }
    let stored_other = store.get_key(&other.account_id, &other.id).await.unwrap();
    assert_eq!(stored_other.last_used_at, Some(UnixMillis(6)));
}

fn note(id: &KeyId, quota: Quota, period: u64, used: u64) -> QuotaNote {
    QuotaNote {
        id: id.clone(),
        quota,
        usage: QuotaUsage { period, used },
    }
}

async fn quota_use_only_moves_forward_against_its_own_quota(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let daily = Quota::new(100, Refill::Daily).unwrap();
    let never = Quota::new(50, Refill::Never).unwrap();
    let mut with_daily = new_key("acct_1", "q1");
    with_daily.quota = Some(daily);
    let mut with_never = new_key("acct_1", "q2");
    with_never.quota = Some(never);
    let mut ids = Vec::new();
    for key in [with_daily, with_never, new_key("acct_1", "q3")] {
        let created = store
            .create_key(key, 10, &Actor::in_process())
            .await
            .unwrap();
        ids.push(created.record.id);
    }
    let [a, b, none] = &ids[..] else {
        unreachable!()
    };
    let record = async |notes: &[QuotaNote]| store.record_quota_usage(notes).await.unwrap();
    let usage = async |id: &KeyId| {
        let stored = store.get_key(&account("acct_1"), id).await.unwrap();
        (stored.quota_usage.period, stored.quota_usage.used)
    };

    record(&[note(a, daily, 10, 5), note(b, never, 0, 7)]).await;
    assert_eq!(usage(a).await, (10, 5));
    assert_eq!(usage(b).await, (0, 7));

    // Less used in the same period, or an earlier period: not written.
    record(&[note(a, daily, 10, 3)]).await;
    record(&[note(a, daily, 9, 80)]).await;
    assert_eq!(usage(a).await, (10, 5));
    // A later period, though fewer used in it: written.
    record(&[note(a, daily, 11, 1)]).await;
    assert_eq!(usage(a).await, (11, 1));

    // A key noted several times in one batch keeps its furthest use,
    // wherever it stands in the batch.
    record(&[
        note(a, daily, 11, 4),
        note(b, never, 0, 8),
        note(a, daily, 11, 9),
        note(a, daily, 11, 6),
    ])
    .await;
    assert_eq!(usage(a).await, (11, 9));
    assert_eq!(usage(b).await, (0, 8));
    record(&[note(a, daily, 12, 2), note(a, daily, 11, 30)]).await;
    assert_eq!(usage(a).await, (12, 2));

    // Use counted against a quota the key no longer has (another limit or
    // refill), or against none, is not written; in the same batch, use of
    // the quota the key has still is.
    let other_limit = Quota::new(200, Refill::Daily).unwrap();
    let other_refill = Quota::new(100, Refill::Monthly).unwrap();
    record(&[
        note(a, other_limit, 13, 1),
        note(a, other_refill, 14, 1),
        note(a, daily, 12, 3),
        note(none, daily, 5, 5),
    ])
    .await;
    assert_eq!(usage(a).await, (12, 3));
    assert_eq!(usage(none).await, (0, 0));
    let stored = store.get_key(&account("acct_1"), none).await.unwrap();
    assert_eq!(stored.quota, None);

    record(&[]).await;
    assert_eq!(usage(a).await, (12, 3));
}

async fn the_key_limit_is_atomic(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let attempts = (0..20).map(|i| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .create_key(
                    new_key("acct_race", &format!("s{i}")),
                    10,
                    &Actor::in_process(),
                )
                .await
        })
    });
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(StoreError::KeyLimitReached { limit: 10 }))))
        .count();
    assert_eq!((created, limited), (10, 10));
    let listed = store
        .list_keys(&account("acct_race"), true, None, 100)
        .await
        .unwrap();
    assert_eq!(listed.len(), 10);
}

async fn account_scoping_is_enforced_by_the_store(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let key = store
        .create_key(new_key("acct_owner", "s"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    let intruder = account("acct_intruder");

    assert!(matches!(
        store.get_key(&intruder, &key.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .revoke_key(&intruder, &key.id, UnixMillis::now(), &Actor::in_process())
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_key(
                &intruder,
                &key.id,
                KeyUpdate::default(),
                UnixMillis::now(),
                &Actor::in_process()
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .list_keys(&intruder, true, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let untouched = store.get_key(&key.account_id, &key.id).await.unwrap();
    assert_eq!(untouched, key);
}

async fn wakeups_follow_appends(db: Db) {
    let Some((_db, store)) = open(db).await else {
        return;
    };
    let mut wakeups = store.subscribe_wakeups().await.unwrap();
    let key = store
        .create_key(new_key("acct_1", "s"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    store
        .revoke_key(
            &key.account_id,
            &key.id,
            UnixMillis::now(),
            &Actor::in_process(),
        )
        .await
        .unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), wakeups.recv()).await;
    assert!(matches!(woke, Ok(Some(_))), "{woke:?}");
}

/// Another session takes the event log's ordering lock (its insert ran, its
/// commit never comes: a replica that stalled mid-write). keyward's writes
/// must give up after `lock_timeout` rather than queue behind it for as long
/// as TCP takes to notice, and must leave nothing half done; once the
/// stalled session is gone they go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_holding_the_ordering_lock_does_not_block_writes_for_long() {
    use sqlx::Connection;

    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let settings = PoolSettings {
        lock_timeout: Duration::from_millis(300),
        ..PoolSettings::default()
    };
    let store = storage::open(&database.database_url(), &settings)
        .await
        .unwrap();
    let stalled_key = store
        .create_key(new_key("acct_1", "a"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    let key = store
        .create_key(new_key("acct_1", "b"), 10, &Actor::in_process())
        .await
        .unwrap()
        .record;
    let logged_before = store.latest_seq().await.unwrap();
    let mut stalled = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut stalled).await.unwrap();
    sqlx::query(
        "INSERT INTO key_events (key_id, account_id, key_hash, kind, at) \
         SELECT id, account_id, key_hash, 'revoked', 1 FROM api_keys WHERE id = $1",
    )
    .bind(stalled_key.id.as_str())
    .execute(&mut stalled)
    .await
    .unwrap();

    // The upper bound only keeps a broken build from hanging the suite.
    let revoke = tokio::time::timeout(
        Duration::from_secs(60),
        store.revoke_key(
            &key.account_id,
            &key.id,
            UnixMillis::now(),
            &Actor::in_process(),
        ),
    )
    .await
    .expect("the write gives up by itself");
    let update = tokio::time::timeout(
        Duration::from_secs(60),
        store.update_key(
            &key.account_id,
            &key.id,
            KeyUpdate {
                name: Some(KeyName::parse("renamed").unwrap()),
                ..KeyUpdate::default()
            },
            UnixMillis::now(),
            &Actor::in_process(),
        ),
    )
    .await
    .expect("the write gives up by itself");

    assert!(matches!(revoke, Err(StoreError::Database(_))), "{revoke:?}");
    assert!(matches!(update, Err(StoreError::Database(_))), "{update:?}");
    let untouched = store.get_key(&key.account_id, &key.id).await.unwrap();
    assert_eq!(untouched, key, "nothing half done");
    assert!(
        store
            .events_after(logged_before, 10)
            .await
            .unwrap()
            .is_empty()
    );

    stalled.close().await.unwrap();
    let revoked = store
        .revoke_key(
            &key.account_id,
            &key.id,
            UnixMillis::now(),
            &Actor::in_process(),
        )
        .await
        .unwrap()
        .record;
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1);
}

/// A replica that stalls inside a write (here: the proxy between it and
/// PostgreSQL stops passing on what it sends, right after the database said
/// it is inside a transaction) is cut off by PostgreSQL after
/// `idle_in_transaction_session_timeout` (5 s, set on every session of the
/// server's pool), not left holding its locks until TCP gives up: the
/// session ends with SQLSTATE 25P03 about 5 s after it went idle, the call
/// fails, nothing of it is written and the account's lock is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_session_idle_inside_a_transaction_is_ended_by_postgresql() {
    use crate::helpers::pg_proxy::{PgProxy, Seen};
    use keyward::proto;
    use keyward::proto::key_service_client::KeyServiceClient;

    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut proxy = PgProxy::start(&database.url).await;
    let mut config = crate::helpers::test_config();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.database_url = proxy.url(&database.url).parse().unwrap();
    let server = keyward::server::start(config)
        .await
        .expect("server starts through the proxy");
    let mut keys = KeyServiceClient::new(crate::helpers::connect(server.addr()).await);
    let create = |name: &str| proto::CreateKeyRequest {
        account_id: "acct_1".into(),
        name: name.into(),
        ..Default::default()
    };
    keys.create_key(create("before")).await.expect("CreateKey");

    proxy.stall_next_transaction();
    let stalled_call = tokio::spawn({
        let mut keys = keys.clone();
        let request = create("stalled");
        async move { keys.create_key(request).await }
    });
    let limit = Duration::from_secs(60);
    let (session, stalled_at) = proxy
        .wait_for(limit, |seen| match seen {
            Seen::Stalled { session, at } => Some((*session, *at)),
            Seen::Error { .. } => None,
        })
        .await
        .expect("CreateKey's transaction reaches the database");
    let (sqlstate, ended_at) = proxy
        .wait_for(limit, |seen| match seen {
            Seen::Error {
                session: s,
                sqlstate,
                at,
            } if *s == session => Some((sqlstate.clone(), *at)),
            _ => None,
        })
        .await
        .expect("PostgreSQL ends the stalled session");

    assert_eq!(
        sqlstate, "25P03",
        "ended for idle_in_transaction_session_timeout"
    );
    let idle = ended_at - stalled_at;
    assert!(
        idle >= Duration::from_millis(4_500),
        "ended {idle:?} after it went idle; keyward sets 5 s"
    );
    let failed = stalled_call
        .await
        .unwrap()
        .expect_err("the stalled call fails");
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
    // Its transaction was rolled back and the account's lock released: the
    // next create in the account goes through, and only it is written.
    keys.create_key(create("after")).await.expect("CreateKey");
    let names: Vec<String> = keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_1".into(),
            include_revoked: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|key| key.name)
        .collect();
    assert_eq!(names, ["before", "after"]);
    server.shutdown().await.expect("clean shutdown");
}

/// The database goes away under the listener and comes back: the listener
/// reconnects by itself and says `Resubscribed` once it listens again, so
/// the follower replays at once instead of waiting for its next poll (no
/// change is made, so no `Changed` hint could stand in for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_says_resubscribed_when_it_listens_again() {
    use crate::helpers::postgres::ThrowawayCluster;
    use keyward::storage::Wakeup;

    let Some(cluster) =
        ThrowawayCluster::start_or_skip("the_listener_says_resubscribed_when_it_listens_again")
    else {
        return;
    };
    let database = TestDatabase::create_postgres(&cluster.admin_url()).await;
    let store = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let mut wakeups = store.subscribe_wakeups().await.unwrap();

    cluster.stop();
    // Whatever the loss itself produced, drop it: what counts is after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while wakeups.try_recv().is_ok() {}
    cluster.start_again().expect("restart PostgreSQL");

    let woke = tokio::time::timeout(Duration::from_secs(30), wakeups.recv()).await;
    assert!(matches!(woke, Ok(Some(Wakeup::Resubscribed))), "{woke:?}");
    drop(database);
}
