//! Revocation across replicas: two servers with separate caches on one
//! database, the change feed between them, failing closed, and the race
//! between a cache load and a revocation.

use keyward::audit::Actor;
use std::sync::Arc;
use std::time::Duration;

use keyward::proto::{self, denial::Reason};
use sqlx::Connection;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::postgres::ThrowawayCluster;
use crate::helpers::{
    Db, TestApp, TestDatabase, eventually, reason, spawn_app, spawn_on, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    a_load_racing_a_revocation_never_resurrects_the_key,
    a_replica_behind_pruned_history_starts_over,
    a_log_that_ends_before_what_was_applied_is_a_gap,
    a_log_rewritten_from_an_older_copy_is_a_gap,
);

/// Puts the test's own database back to "just after event `seq`", as a
/// restore from a backup (or a failover to a standby that was behind)
/// would: later events are gone and their sequence numbers will be drawn
/// again.
pub(crate) async fn rewind_log(database: &TestDatabase, seq: i64) {
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::query("DELETE FROM key_events WHERE seq > ?1")
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'key_events'")
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            sqlx::query("DELETE FROM key_events WHERE seq > $1")
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("SELECT setval('key_events_seq', $1)")
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// A follower over a fresh database with `count` keys (all live), the keys,
/// and the feed's live broadcast.
struct Follower {
    store: Arc<dyn keyward::storage::KeyStore>,
    cache: Arc<keyward::key_cache::KeyCache>,
    feed: Arc<keyward::change_feed::ChangeFeed>,
    live: tokio::sync::broadcast::Receiver<keyward::change_feed::FeedItem>,
    keys: Vec<keyward::storage::KeyRecord>,
    database: Arc<TestDatabase>,
}

async fn follower_with_keys(db: Db, count: usize) -> Option<Follower> {
    use keyward::change_feed::{ChangeFeed, FeedSettings};
    use keyward::domain::{AccountId, KeyDigest, KeyId, KeyName, UnixMillis};
    use keyward::key_cache::{CacheSettings, KeyCache};
    use keyward::storage::{self, NewKey, PoolSettings};

    let database = TestDatabase::create(db).await?;
    let store = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let cache = Arc::new(KeyCache::new(&CacheSettings::default()));
    let feed = ChangeFeed::start(
        Arc::clone(&store),
        Arc::clone(&store),
        Arc::clone(&cache),
        FeedSettings::default(),
    )
    .await
    .unwrap();
    let live = feed.subscribe();
    let mut keys = Vec::new();
    for i in 0..count {
        keys.push(
            store
                .create_key(
                    NewKey {
                        id: KeyId::generate(),
                        account_id: AccountId::parse("acct_1").unwrap(),
                        name: KeyName::parse("k").unwrap(),
                        digest: KeyDigest::of(&format!("cc_{i}")),
                        start: "cc_000000".into(),
                        scopes: vec![],
                        rate_limit: None,
                        quota: None,
                        created_at: UnixMillis::now(),
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
                .record,
        );
    }
    Some(Follower {
        store,
        cache,
        feed,
        live,
        keys,
        database,
    })
}

impl Follower {
    /// Caches key `i` as live, as a lookup would.
    fn cache_live(&self, i: usize) {
        use keyward::key_cache::CachedKey;
        let key = &self.keys[i];
        let cached = Arc::new(CachedKey::from_record(
            key.clone(),
            &keyward::scope_catalog::ScopeCatalog::carboncopy(),
        ));
        assert!(self.cache.insert_by_digest(
            self.cache.ticket_for_digest(&key.digest),
            &cached,
            key.digest
        ));
    }

    fn is_cached(&self, i: usize) -> bool {
        use keyward::key_cache::Lookup;
        matches!(
            self.cache.lookup_digest(&self.keys[i].digest),
            Lookup::Hit(_)
        )
    }

    async fn revoke(&self, i: usize) {
        let key = &self.keys[i];
        self.store
            .revoke_key(
                &key.account_id,
                &key.id,
                keyward::domain::UnixMillis::now(),
                &Actor::in_process(),
            )
            .await
            .unwrap();
    }

    /// The broadcast items so far: events' sequences, and gaps.
    fn broadcast(&mut self) -> Vec<String> {
        use keyward::change_feed::FeedItem;
        let mut items = Vec::new();
        while let Ok(item) = self.live.try_recv() {
            items.push(match item {
                FeedItem::Event(event) => format!("event {}", event.seq),
                FeedItem::Gap { resumed_at, cause } => format!("gap {cause:?} at {resumed_at}"),
            });
        }
        items
    }
}

/// The follower applied events 1 to 3; the database is then put back to
/// just after event 1 and a new revocation draws seq 2 again. The log now
/// ends before what the follower applied: it must not wait for seq 4 (and
/// skip the new revocation), but clear its cache and start over at 2.
async fn a_log_that_ends_before_what_was_applied_is_a_gap(db: Db) {
    let Some(mut follower) = follower_with_keys(db, 5).await else {
        return;
    };
    for i in 0..3 {
        follower.revoke(i).await;
    }
    follower.feed.poll_once().await.unwrap();
    assert_eq!(follower.feed.applied_seq(), 3);
    follower.cache_live(3);
    // A replica that started at seq 3 has applied no event it could check.
    let started_late = keyward::change_feed::ChangeFeed::start(
        Arc::clone(&follower.store),
        Arc::clone(&follower.store),
        Arc::new(keyward::key_cache::KeyCache::new(&Default::default())),
        Default::default(),
    )
    .await
    .unwrap();
    let mut started_late_live = started_late.subscribe();

    rewind_log(&follower.database, 1).await;
    follower.revoke(3).await;
    follower.feed.poll_once().await.unwrap();
    started_late.poll_once().await.unwrap();

    assert!(!follower.is_cached(3), "the revoked key is still cached");
    assert_eq!(follower.feed.applied_seq(), 2);
    assert_eq!(
        follower.broadcast(),
        ["event 1", "event 2", "event 3", "gap Rewound at 2"]
    );
    assert_eq!(started_late.applied_seq(), 2);
    assert!(matches!(
        started_late_live.try_recv(),
        Ok(keyward::change_feed::FeedItem::Gap {
            resumed_at: 2,
            cause: keyward::change_feed::GapCause::Rewound
        })
    ));
    // And it follows the log from there.
    follower.cache_live(4);
    follower.revoke(4).await;
    follower.feed.poll_once().await.unwrap();
    assert!(!follower.is_cached(4));
    assert_eq!(follower.broadcast(), ["event 3"]);
}

/// As above, but enough new changes land before the follower polls that the
/// rewound log is as long as before: only the differing event at seq 3 (the
/// last one it applied) shows that the log was rewritten.
async fn a_log_rewritten_from_an_older_copy_is_a_gap(db: Db) {
    let Some(mut follower) = follower_with_keys(db, 5).await else {
        return;
    };
    for i in 0..3 {
        follower.revoke(i).await;
    }
    follower.feed.poll_once().await.unwrap();
    follower.cache_live(3);
    follower.cache_live(4);

    rewind_log(&follower.database, 1).await;
    follower.revoke(3).await;
    follower.revoke(4).await;
    assert_eq!(follower.store.latest_seq().await.unwrap(), 3);
    follower.feed.poll_once().await.unwrap();

    assert!(!follower.is_cached(3), "a revoked key is still cached");
    assert!(!follower.is_cached(4), "a revoked key is still cached");
    assert_eq!(
        follower.broadcast(),
        ["event 1", "event 2", "event 3", "gap Rewound at 3"]
    );
}

/// A replica that was cut off while retention pruned events it never
/// applied must notice even when later events remain (a non-empty page),
/// drop its cache, and tell watch streams there is a gap.
async fn a_replica_behind_pruned_history_starts_over(db: Db) {
    use keyward::change_feed::{ChangeFeed, FeedItem, FeedSettings};
    use keyward::domain::{AccountId, KeyDigest, KeyId, KeyName, UnixMillis};
    use keyward::key_cache::{CacheSettings, CachedKey, KeyCache, Lookup};
    use keyward::storage::{self, NewKey, PoolSettings};

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
        FeedSettings::default(),
    )
    .await
    .unwrap();
    let mut live = feed.subscribe();

    let mut keys = Vec::new();
    for i in 0..4 {
        let key = store
            .create_key(
                NewKey {
                    id: KeyId::generate(),
                    account_id: AccountId::parse("acct_1").unwrap(),
                    name: KeyName::parse("k").unwrap(),
                    digest: KeyDigest::of(&format!("cc_{i}")),
                    start: "cc_000000".into(),
                    scopes: vec![],
                    rate_limit: None,
                    quota: None,
                    created_at: UnixMillis::now(),
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
        keys.push(key);
    }
    // The replica caches the fourth key, then is cut off while three
    // revocations happen and the first two are pruned.
    let cached = Arc::new(CachedKey::from_record(
        keys[3].clone(),
        &keyward::scope_catalog::ScopeCatalog::carboncopy(),
    ));
    assert!(cache.insert_by_digest(
        cache.ticket_for_digest(&keys[3].digest),
        &cached,
        keys[3].digest
    ));
    for (i, key) in keys[..3].iter().enumerate() {
        store
            .revoke_key(
                &key.account_id,
                &key.id,
                UnixMillis(1_000 * (i as i64 + 1)),
                &Actor::in_process(),
            )
            .await
            .unwrap();
    }
    store.prune_events(UnixMillis(2_500)).await.unwrap();
    assert_eq!(
        store.events_after(0, 100).await.unwrap().len(),
        1,
        "one event remains"
    );

    feed.poll_once().await.unwrap();

    assert!(
        matches!(cache.lookup_digest(&keys[3].digest), Lookup::Miss(_)),
        "the cache was dropped"
    );
    assert_eq!(feed.applied_seq(), store.latest_seq().await.unwrap());
    assert!(
        matches!(live.try_recv(), Ok(FeedItem::Gap { .. })),
        "streams are told"
    );
}

/// Polls `ask` until `done` holds for an answer (within a generous limit);
/// every answer asked for more than the freshness bound after `since` must
/// not be allowed (past the bound a replica has applied the change, or
/// cannot prove it is current and fails closed).
async fn settles_within_the_bound(
    since: tokio::time::Instant,
    mut ask: impl AsyncFnMut() -> proto::AuthenticateResponse,
    done: impl Fn(&proto::AuthenticateResponse) -> bool,
) -> bool {
    let bound = test_config().feed.freshness_bound;
    eventually(Duration::from_secs(10), async || {
        let sent = since.elapsed();
        let answer = ask().await;
        assert!(
            sent <= bound || !answer.allowed,
            "allowed {sent:?} after the change, past the freshness bound: {answer:?}"
        );
        done(&answer)
    })
    .await
}

/// Revoke on A; B must deny within the freshness bound (in practice within
/// milliseconds; `keyward-bench` measures it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_on_one_replica_is_seen_by_the_other() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b = spawn_on(database.clone(), test_config()).await;
    let (key, secret) = a.create_key("acct_1", &["orders:read"]).await;
    // B caches the key as live.
    assert!(b.authenticate(&secret, &["orders:read"]).await.allowed);

    a.revoke("acct_1", &key.id).await;
    let revoked = tokio::time::Instant::now();

    let denied = settles_within_the_bound(
        revoked,
        async || b.authenticate(&secret, &["orders:read"]).await,
        |answer| reason(answer) == Reason::Revoked,
    )
    .await;
    assert!(denied, "replica B still accepts a revoked key");
    a.shutdown().await;
    b.shutdown().await;
}

/// Scope changes travel the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_change_on_one_replica_reaches_the_other() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b = spawn_on(database.clone(), test_config()).await;
    let (key, secret) = a.create_key("acct_1", &["orders:write"]).await;
    assert!(b.authenticate(&secret, &["orders:write"]).await.allowed);

    a.keys
        .update_key(proto::UpdateKeyRequest {
            account_id: "acct_1".into(),
            key_id: key.id,
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let changed = tokio::time::Instant::now();

    let narrowed = settles_within_the_bound(
        changed,
        async || b.authenticate(&secret, &["orders:write"]).await,
        |answer| reason(answer) == Reason::InsufficientScope,
    )
    .await;
    assert!(narrowed, "replica B still grants the removed scope");
    assert!(b.authenticate(&secret, &["orders:read"]).await.allowed);
}

/// Revocations issued at the same time on both replicas: none is missed by
/// either replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_on_both_replicas_are_all_applied() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b = spawn_on(database.clone(), test_config()).await;
    let mut keys = Vec::new();
    for i in 0..24 {
        let account = format!("acct_{}", i % 4);
        let (key, secret) = a.create_key(&account, &[]).await;
        // Both replicas cache every key as live.
        assert!(a.authenticate(&secret, &[]).await.allowed);
        assert!(b.authenticate(&secret, &[]).await.allowed);
        keys.push((account, key.id, secret));
    }

    let revocations = keys.iter().enumerate().map(|(i, (account, id, _))| {
        let mut client = if i % 2 == 0 {
            a.keys.clone()
        } else {
            b.keys.clone()
        };
        let request = proto::RevokeKeyRequest {
            account_id: account.clone(),
            key_id: id.clone(),
        };
        async move { client.revoke_key(request).await.map(|_| ()) }
    });
    for result in futures_util::future::join_all(revocations).await {
        result.expect("RevokeKey");
    }
    let revoked = tokio::time::Instant::now();

    for replica in [&mut a, &mut b] {
        for (_, id, secret) in &keys {
            let denied = settles_within_the_bound(
                revoked,
                async || replica.authenticate(secret, &[]).await,
                |answer| reason(answer) == Reason::Revoked,
            )
            .await;
            assert!(denied, "{id} still accepted");
        }
    }
}

/// The `application_name` replica B's sessions carry (its database URL
/// names it), so the test can kill B's and only B's.
const REPLICA_B: &str = "keyward_b";

/// B's sessions in the test's database: its pool, its follower's pool and
/// (with `listener_only`) just its listener.
async fn replica_b_backends(admin: &mut sqlx::PgConnection, listener_only: bool) -> Vec<i32> {
    let pattern = if listener_only {
        format!("{REPLICA_B}{}", keyward::storage::postgres::LISTENER_SUFFIX)
    } else {
        format!("{REPLICA_B}%")
    };
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1 AND datname = current_database()",
    )
    .bind(pattern)
    .fetch_all(admin)
    .await
    .unwrap()
}

/// Replica B's connections to the database (listener, follower and pool)
/// are killed with pg_terminate_backend again and again from a spawned loop
/// while A revokes keys B has cached. B is sampled continuously from each
/// RevokeKey's return until past the fail-closed bound: once the bound has
/// passed it never answers "allowed" (revoked, or unavailable when it cannot
/// prove it is current). Then it recovers by itself, and a revocation
/// reaches it by NOTIFY: far sooner than its next poll could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_listener_never_lets_a_revoked_key_through() {
    use keyward::proto::key_service_client::KeyServiceClient;
    use keyward::server;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::time::Instant;

    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut config = test_config();
    // Poll seldom, so that only NOTIFY explains a quick denial.
    config.feed.poll_interval = Duration::from_secs(5);
    config.feed.freshness_bound = Duration::from_secs(10);
    let bound = config.feed.freshness_bound;
    let margin = Duration::from_secs(1);
    // Answers each sampler must have asked for after the bound.
    const AFTER_BOUND: usize = 3;
    let mut a = spawn_on(database.clone(), config.clone()).await;
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.database_url = format!("{}?application_name={REPLICA_B}", database.url)
        .parse()
        .unwrap();
    let b = server::start(config).await.expect("replica B starts");
    let b_channel = crate::helpers::connect(b.addr()).await;
    let b_keys = KeyServiceClient::new(b_channel.clone());
    let mut b_health = tonic_health::pb::health_client::HealthClient::new(b_channel);
    let authenticate_on_b = move |secret: String| {
        let mut client = b_keys.clone();
        async move {
            client
                .authenticate(proto::AuthenticateRequest {
                    credential: secret,
                    ..Default::default()
                })
                .await
                .expect("Authenticate on B")
                .into_inner()
        }
    };
    let mut admin = sqlx::PgConnection::connect(&database.url).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || {
            !replica_b_backends(&mut admin, true).await.is_empty()
        })
        .await,
        "B's listener connected"
    );

    // Keys B has cached as live.
    let mut keys = Vec::new();
    for round in 0..6 {
        let account = format!("acct_{round}");
        let (key, secret) = a.create_key(&account, &[]).await;
        assert!(authenticate_on_b(secret.clone()).await.allowed);
        keys.push((account, key.id, secret));
    }

    let stop_killing = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn({
        let stop = Arc::clone(&stop_killing);
        let url = database.url.clone();
        async move {
            let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
            let (mut listeners, mut others) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let listener = replica_b_backends(&mut admin, true).await;
                for pid in replica_b_backends(&mut admin, false).await {
                    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .fetch_one(&mut admin)
                        .await
                        .unwrap();
                    if terminated && listener.contains(&pid) {
                        listeners += 1;
                    } else if terminated {
                        others += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (listeners, others)
        }
    });

    let mut samplers = Vec::new();
    for (account, id, secret) in &keys {
        a.revoke(account, id).await;
        let returned = Instant::now();
        let sample = authenticate_on_b.clone();
        let secret = secret.clone();
        samplers.push(tokio::spawn(async move {
            // Every answer, with when it was asked for (after RevokeKey
            // returned). Sampling goes on until at least `AFTER_BOUND`
            // answers were asked for after the bound, however long single
            // calls take (within a generous limit).
            let mut answers: Vec<(Duration, Reason)> = Vec::new();
            loop {
                let sent = returned.elapsed();
                let answer = sample(secret.clone()).await;
                if sent > bound {
                    assert!(
                        !answer.allowed,
                        "a revoked key was allowed {sent:?} after RevokeKey returned: {answer:?}"
                    );
                }
                answers.push((sent, reason(&answer)));
                let after_bound = answers.iter().filter(|(sent, _)| *sent > bound).count();
                let elapsed = returned.elapsed();
                if (elapsed >= bound + margin && after_bound >= AFTER_BOUND)
                    || elapsed >= bound + Duration::from_secs(60)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for sampler in samplers {
        let answers = sampler.await.expect("sampler");
        let after_bound: Vec<Reason> = answers
            .iter()
            .filter(|(sent, _)| *sent > bound)
            .map(|&(_, reason)| reason)
            .collect();
        assert!(
            after_bound.len() >= AFTER_BOUND,
            "only {} answers were asked for after the bound: {answers:?}",
            after_bound.len()
        );
        assert!(
            after_bound
                .iter()
                .all(|r| matches!(r, Reason::Revoked | Reason::Unavailable)),
            "after the bound: {after_bound:?}"
        );
    }
    stop_killing.store(true, Ordering::Relaxed);
    let (listeners_killed, others_killed) = killer.await.unwrap();
    assert!(listeners_killed > 0, "the test killed B's listener");
    assert!(others_killed > 0, "the test killed B's other sessions");

    // Recovery, by itself: serving, listening, and revocations arrive by
    // NOTIFY, each well within the 5 s until the next poll at the latest.
    let serving = eventually(Duration::from_secs(20), async || {
        b_health
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
    })
    .await;
    assert!(serving, "B did not return to SERVING");
    assert!(
        eventually(Duration::from_secs(10), async || {
            !replica_b_backends(&mut admin, true).await.is_empty()
        })
        .await,
        "B's listener reconnected"
    );
    for round in 0..3 {
        let account = format!("acct_recovery_{round}");
        let (key, secret) = a.create_key(&account, &[]).await;
        assert!(authenticate_on_b(secret.clone()).await.allowed);
        a.revoke(&account, &key.id).await;
        let by_notify = eventually(Duration::from_millis(1_500), async || {
            reason(&authenticate_on_b(secret.clone()).await) == Reason::Revoked
        })
        .await;
        assert!(by_notify, "round {round}: no NOTIFY reached B");
    }
    a.shutdown().await;
    b.shutdown().await.expect("B stops cleanly");
}

async fn revoke_by_hand(conn: &mut sqlx::PgConnection, id: &str) {
    sqlx::query("UPDATE api_keys SET revoked_at = 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO key_events (key_id, account_id, key_hash, kind, at) \
         SELECT id, account_id, key_hash, 'revoked', 1 FROM api_keys WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// The sequence number of `key_id`'s revocation event, as `conn` sees it now
/// (`None`: no such event is visible to it).
async fn revocation_seq(conn: &mut sqlx::PgConnection, key_id: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT seq FROM key_events WHERE key_id = $1 AND kind = 'revoked'")
        .bind(key_id)
        .fetch_optional(&mut *conn)
        .await
        .unwrap()
}

/// Sequence numbers must become visible in commit order. A writer holding an
/// uncommitted event makes later writers wait for the event log's lock
/// (seen in `pg_locks`), so by the time a later writer has its number, every
/// lower number is committed: checked inside the later transaction, right
/// after its insert, which is what a follower reading then would see. Both
/// revocations reach replica B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_event_is_not_overtaken() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b = spawn_on(database.clone(), test_config()).await;
    let (first, first_secret) = a.create_key("acct_1", &[]).await;
    let (second, second_secret) = a.create_key("acct_1", &[]).await;
    assert!(b.authenticate(&first_secret, &[]).await.allowed);
    assert!(b.authenticate(&second_secret, &[]).await.allowed);

    // Two transactions revoke the keys by hand, as any writer would.
    let mut early = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let mut late = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let mut observer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let late_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut late)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut early).await.unwrap();
    revoke_by_hand(&mut early, &first.id).await;
    let early_seq = revocation_seq(&mut early, &first.id)
        .await
        .expect("the early writer sees its own event");

    // The second writer starts while the first is uncommitted. Once its
    // insert has drawn a number, it looks (still inside its transaction)
    // for the early writer's event.
    let (first_id, second_id) = (first.id.clone(), second.id.clone());
    let late_writer = tokio::spawn(async move {
        sqlx::query("BEGIN").execute(&mut late).await.unwrap();
        revoke_by_hand(&mut late, &second_id).await;
        let late_seq = revocation_seq(&mut late, &second_id).await.unwrap();
        let early_seen = revocation_seq(&mut late, &first_id).await;
        sqlx::query("COMMIT").execute(&mut late).await.unwrap();
        (late_seq, early_seen)
    });
    let waiting_for_the_lock = eventually(Duration::from_secs(30), async || {
        late_writer.is_finished()
            || sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks \
                 WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)",
            )
            .bind(late_pid)
            .fetch_one(&mut observer)
            .await
            .unwrap()
    })
    .await;
    assert!(
        waiting_for_the_lock,
        "the late writer neither waits nor finishes"
    );
    let late_has_waited = !late_writer.is_finished();
    assert!(
        b.authenticate(&second_secret, &[]).await.allowed,
        "nothing committed yet"
    );

    sqlx::query("COMMIT").execute(&mut early).await.unwrap();
    let (late_seq, early_seen) = late_writer.await.unwrap();

    assert_eq!(
        early_seen,
        Some(early_seq),
        "the late writer drew seq {late_seq} while seq {early_seq} was still uncommitted: \
         a follower reading then would pass {early_seq} for ever"
    );
    assert!(early_seq < late_seq, "commit order is sequence order");
    assert!(
        late_has_waited,
        "the late writer went ahead while an earlier event was uncommitted"
    );
    for secret in [&first_secret, &second_secret] {
        assert!(
            eventually(Duration::from_secs(10), async || {
                reason(&b.authenticate(secret, &[]).await) == Reason::Revoked
            })
            .await,
            "a revocation was skipped"
        );
    }
}

/// Many rounds of Authenticates that miss the cache racing a RevokeKey. The
/// racing calls start at spread moments (one at once, one a little later,
/// varying by round), so some are sent while RevokeKey runs and some after
/// it returned. A racing call may be allowed only if it was sent before
/// RevokeKey returned; otherwise, and for every call after, it must be
/// REVOKED: a load that read the row before the revocation never re-caches
/// it, and the replica that revoked never answers from the old state.
async fn a_load_racing_a_revocation_never_resurrects_the_key(db: Db) {
    use tokio::time::Instant;
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (mut allowed_racing, mut sent_after_return) = (0, 0);
    for round in 0..150 {
        let account = format!("acct_{}", round % 15);
        let (key, secret) = app.create_key(&account, &[]).await;
        let mut revoke_client = app.keys.clone();
        let lookups: Vec<_> = [Duration::ZERO, Duration::from_millis(round % 8)]
            .into_iter()
            .map(|delay| {
                let mut client = app.keys.clone();
                let credential = secret.clone();
                tokio::spawn(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let sent = Instant::now();
                    let answer = client
                        .authenticate(proto::AuthenticateRequest {
                            credential,
                            ..Default::default()
                        })
                        .await
                        .expect("Authenticate")
                        .into_inner();
                    (sent, answer)
                })
            })
            .collect();
        revoke_client
            .revoke_key(proto::RevokeKeyRequest {
                account_id: account.clone(),
                key_id: key.id.clone(),
            })
            .await
            .expect("RevokeKey");
        let returned = Instant::now();

        for lookup in lookups {
            let (sent, answer) = lookup.await.unwrap();
            if sent >= returned {
                sent_after_return += 1;
            }
            if answer.allowed {
                allowed_racing += 1;
                assert!(
                    sent < returned,
                    "round {round}: a call sent {:?} after RevokeKey returned was allowed: {answer:?}",
                    sent - returned
                );
            } else {
                assert_eq!(
                    reason(&answer),
                    Reason::Revoked,
                    "round {round}: racing call answered {answer:?}"
                );
            }
        }
        for _ in 0..3 {
            let after = app.authenticate(&secret, &[]).await;
            assert_eq!(
                reason(&after),
                Reason::Revoked,
                "round {round}: revoked key answered {after:?}"
            );
        }
    }
    // Not assertions (scheduling decides), but what the rounds covered.
    eprintln!(
        "{allowed_racing} racing calls were allowed; {sent_after_return} were sent after RevokeKey returned"
    );
    app.shutdown().await;
}

/// With its database gone, a replica keeps answering cached keys (no
/// database call on a hit) only until it can no longer prove it is current;
/// then it fails closed (UNAVAILABLE, 503, NOT_SERVING) and recovers by
/// itself when the database returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_fails_closed_and_recovers() {
    let Some(cluster) =
        ThrowawayCluster::start_or_skip("losing_the_database_fails_closed_and_recovers")
    else {
        return;
    };
    let database = Arc::new(TestDatabase::create_postgres(&cluster.admin_url()).await);
    let mut config = test_config();
    // Long enough that stopping the database and the two calls below fit
    // inside it even on a loaded machine (a descheduled CI thread included).
    config.feed.freshness_bound = Duration::from_secs(10);
    let mut app: TestApp = spawn_on(database.clone(), config).await;
    let (_, cached_secret) = app.create_key("acct_1", &["orders:read"]).await;
    let (_, uncached_secret) = app.create_key("acct_1", &["orders:read"]).await;
    assert!(
        app.authenticate(&cached_secret, &["orders:read"])
            .await
            .allowed
    );

    cluster.stop();

    // Within the bound: the cached key needs no database.
    let cached = app.authenticate(&cached_secret, &["orders:read"]).await;
    let uncached = app.authenticate(&uncached_secret, &["orders:read"]).await;
    assert!(cached.allowed, "{cached:?}");
    assert_eq!(reason(&uncached), Reason::Unavailable);
    assert_eq!(uncached.denial.unwrap().http_status, 503);

    // Past the bound: fail closed, health NOT_SERVING.
    let not_serving = eventually(Duration::from_secs(40), async || {
        app.health
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status() == ServingStatus::NotServing)
    })
    .await;
    assert!(not_serving, "health still SERVING without a database");
    let closed = app.authenticate(&cached_secret, &["orders:read"]).await;
    assert_eq!(reason(&closed), Reason::Unavailable);

    cluster.start_again().expect("restart PostgreSQL");
    let recovered = eventually(Duration::from_secs(20), async || {
        app.authenticate(&cached_secret, &["orders:read"])
            .await
            .allowed
    })
    .await;
    assert!(recovered, "did not recover after the database came back");
    // Health follows within its watchdog tick.
    let serving = eventually(Duration::from_secs(10), async || {
        app.health
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
    })
    .await;
    assert!(serving, "health did not return to SERVING");
    app.shutdown().await;
}
