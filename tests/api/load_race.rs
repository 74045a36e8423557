//! The race between a cache load and a revocation, made to happen every
//! time: the real store (SQLite or PostgreSQL) behind a decorator that holds
//! a cache-miss read, after it has read the row, until RevokeKey has
//! returned. The old row must then be neither answered as "allowed" nor
//! cached, also when other changes forced the load to read again first.
//! Each scenario determines its answer exactly, and the decorator counts the
//! key reads the lookup made: one more than the reads a change disturbed,
//! and [`LOAD_ATTEMPTS`] when every read is disturbed.
//! (The loop in `revocation.rs` races the same paths over the network,
//! where the window is only microseconds wide.)

use keyward::audit::Actor;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyward::authenticator::{Authenticator, Presented, PresentedKey, Required};
use keyward::change_feed::Freshness;
use keyward::config::Config;
use keyward::denial::Reason;
use keyward::domain::{AccountId, KeyDigest, KeyId, KeyName};
use keyward::key_cache::{KeyCache, Lookup};
use keyward::key_management::{CreateKey, KeyManager};
use keyward::storage::{self, KeyStore, PoolSettings};
use keyward::telemetry::Surface;
use tokio::sync::{Mutex, oneshot};

use crate::helpers::store_decorator::{Call, Decorated, InProcess, StoreHooks, in_process};
use crate::helpers::{Db, TestDatabase};
use crate::on_both_databases;

on_both_databases!(
    a_lookup_held_across_a_revocation_is_not_allowed_or_cached,
    a_lookup_by_id_held_across_a_revocation_is_not_allowed_or_cached,
    a_lookup_that_rereads_until_a_revocation_is_not_allowed_or_cached,
    a_lookup_by_id_that_rereads_until_a_revocation_is_not_allowed_or_cached,
    a_lookup_disturbed_on_every_read_fails_closed,
    a_lookup_on_b_held_across_a_revocation_on_a_is_not_allowed_or_cached,
);

/// How many reads a cache miss makes before it fails closed when a change
/// lands on its stripe during every read (`LOAD_ATTEMPTS` in
/// `authenticator.rs`, private there). Pinned here: fewer reads fail closed
/// on lookups that one more read would have answered, more reads keep a
/// caller waiting longer under churn.
const LOAD_ATTEMPTS: usize = 4;

/// Holds the next key reads (by digest or id), one per armed hold, after
/// each has read its row: tells the test it has the row, then waits for the
/// test's go-ahead. Counts every key read that reaches the store.
#[derive(Default)]
struct HeldReads {
    holds: Mutex<VecDeque<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    key_reads: AtomicUsize,
}

impl HeldReads {
    /// Arms a hold for the next read not yet held; returns (row read, release).
    async fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (read_tx, read_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.holds.lock().await.push_back((read_tx, release_rx));
        (read_rx, release_tx)
    }

    /// Drops the holds no read has taken.
    async fn disarm(&self) {
        self.holds.lock().await.clear();
    }

    /// Key reads (by digest or id) that reached the store so far.
    fn key_reads(&self) -> usize {
        self.key_reads.load(Ordering::SeqCst)
    }
}

/// Waits for a held read to have read its row; a bounded wait, so a hold
/// that is never taken fails the test instead of hanging it.
async fn row_was_read(row_read: oneshot::Receiver<()>) {
    tokio::time::timeout(Duration::from_secs(30), row_read)
        .await
        .expect("the lookup reaches the store within 30 s")
        .expect("the hold is still armed");
}

#[async_trait]
impl StoreHooks for HeldReads {
    fn before(&self, call: Call) {
        if matches!(call, Call::FindByDigest | Call::FindById) {
            self.key_reads.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn after_key_read(&self) {
        let hold = self.holds.lock().await.pop_front();
        if let Some((read, release)) = hold {
            let _ = read.send(());
            let _ = release.await;
        }
    }
}

struct Parts {
    store: Arc<Decorated<HeldReads>>,
    cache: Arc<KeyCache>,
    authenticator: Authenticator,
    manager: KeyManager,
    _database: Arc<TestDatabase>,
}

async fn parts(db: Db) -> Option<Parts> {
    parts_with(db, None).await
}

/// `stripes`: a cache with that many stripes (one: every change to any key
/// disturbs every load in flight), or the default.
async fn parts_with(db: Db, stripes: Option<usize>) -> Option<Parts> {
    let database = TestDatabase::create(db).await?;
    let real = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let store = Decorated::new(real, HeldReads::default());
    let config = Config::default();
    let cache = Arc::new(match stripes {
        Some(stripes) => KeyCache::with_stripes(&config.cache, stripes),
        None => KeyCache::new(&config.cache),
    });
    let freshness = Arc::new(Freshness::new(Duration::from_secs(600)));
    freshness.confirm(Instant::now());
    let InProcess {
        authenticator,
        manager,
        ..
    } = in_process(
        Arc::clone(&store) as Arc<dyn KeyStore>,
        Arc::clone(&cache),
        freshness,
    );
    Some(Parts {
        store,
        cache,
        authenticator,
        manager,
        _database: database,
    })
}

async fn create(manager: &KeyManager) -> (KeyId, String) {
    create_in(manager, "acct_1").await
}

async fn create_in(manager: &KeyManager, account: &str) -> (KeyId, String) {
    let (record, secret) = manager
        .create(
            CreateKey {
                account_id: AccountId::parse(account).unwrap(),
                name: KeyName::parse("raced").unwrap(),
                scopes: vec![],
                preset: None,
                expires_at: None,
                rate_limit: None,
                quota: None,
                metadata: Default::default(),
                allowed_networks: Vec::new(),
            },
            &Actor::in_process(),
        )
        .await
        .unwrap();
    (record.record.id, secret.into_exposed())
}

fn reason(verdict: &keyward::authenticator::Verdict) -> Option<Reason> {
    verdict.denial().map(|d| d.reason)
}

async fn a_lookup_held_across_a_revocation_is_not_allowed_or_cached(db: Db) {
    let Some(parts) = parts(db).await else { return };
    let (id, secret) = create(&parts.manager).await;
    let (row_read, release) = parts.store.hooks.arm().await;
    let reads_before = parts.store.hooks.key_reads();

    let authenticator = &parts.authenticator;
    let lookup = authenticator.authenticate(Presented {
        surface: Surface::Authenticate,
        min_revision: 0,
        key: PresentedKey::Credential(&secret),
        required: Required::Scopes(&[]),
        account: None,
        client: None,
    });
    let revoke = async {
        // Revoke once the lookup holds the live row, then let it go on.
        row_was_read(row_read).await;
        parts
            .manager
            .revoke(
                &AccountId::parse("acct_1").unwrap(),
                &id,
                &Actor::in_process(),
            )
            .await
            .unwrap();
        release.send(()).unwrap();
    };
    let (in_flight, ()) = tokio::join!(lookup, revoke);

    // It finished after RevokeKey returned: it must not say "allowed". Its
    // insert failed, so it read again and found the revocation.
    assert_eq!(reason(&in_flight), Some(Reason::Revoked), "{in_flight:?}");
    assert_eq!(
        parts.store.hooks.key_reads() - reads_before,
        2,
        "the held read, then one that sees the revocation"
    );
    let after = authenticator
        .authenticate(Presented {
            surface: Surface::Authenticate,
            min_revision: 0,
            key: PresentedKey::Credential(&secret),
            required: Required::Scopes(&[]),
            account: None,
            client: None,
        })
        .await;
    assert_eq!(
        reason(&after),
        Some(Reason::Revoked),
        "the old row was cached: {after:?}"
    );
}

async fn a_lookup_by_id_held_across_a_revocation_is_not_allowed_or_cached(db: Db) {
    let Some(parts) = parts(db).await else { return };
    let (id, _) = create(&parts.manager).await;
    let (row_read, release) = parts.store.hooks.arm().await;
    let reads_before = parts.store.hooks.key_reads();

    let authenticator = &parts.authenticator;
    let lookup = authenticator.authenticate(Presented {
        surface: Surface::CheckScope,
        min_revision: 0,
        key: PresentedKey::Id(&id),
        required: Required::Scopes(&[]),
        account: None,
        client: None,
    });
    let revoke = async {
        row_was_read(row_read).await;
        parts
            .manager
            .revoke(
                &AccountId::parse("acct_1").unwrap(),
                &id,
                &Actor::in_process(),
            )
            .await
            .unwrap();
        release.send(()).unwrap();
    };
    let (in_flight, ()) = tokio::join!(lookup, revoke);

    assert_eq!(reason(&in_flight), Some(Reason::Revoked), "{in_flight:?}");
    assert_eq!(
        parts.store.hooks.key_reads() - reads_before,
        2,
        "the held read, then one that sees the revocation"
    );
    let after = authenticator
        .authenticate(Presented {
            surface: Surface::CheckScope,
            min_revision: 0,
            key: PresentedKey::Id(&id),
            required: Required::Scopes(&[]),
            account: None,
            client: None,
        })
        .await;
    assert_eq!(
        reason(&after),
        Some(Reason::Revoked),
        "the old row was cached: {after:?}"
    );
}

async fn a_lookup_that_rereads_until_a_revocation_is_not_allowed_or_cached(db: Db) {
    rereads_until_a_revocation(db, Surface::Authenticate).await;
}

async fn a_lookup_by_id_that_rereads_until_a_revocation_is_not_allowed_or_cached(db: Db) {
    rereads_until_a_revocation(db, Surface::CheckScope).await;
}

/// A miss whose first two reads are disturbed by changes to other keys (one
/// stripe, so they share its epoch) and whose third read holds the live row
/// across this key's revocation: it must answer neither "allowed" (the old
/// row) nor cache the key as live. Its fourth read, the last it may make,
/// finds the key revoked: REVOKED, after exactly four reads (with fewer
/// allowed it would fail closed instead).
async fn rereads_until_a_revocation(db: Db, surface: Surface) {
    let Some(parts) = parts_with(db, Some(1)).await else {
        return;
    };
    let (id, secret) = create(&parts.manager).await;
    let others = [
        create_in(&parts.manager, "acct_2").await.0,
        create_in(&parts.manager, "acct_2").await.0,
    ];
    let mut holds = Vec::new();
    for _ in 0..3 {
        holds.push(parts.store.hooks.arm().await);
    }
    let presented = || Presented {
        surface,
        key: match surface {
            Surface::CheckScope => PresentedKey::Id(&id),
            _ => PresentedKey::Credential(&secret),
        },
        required: Required::Scopes(&[]),
        account: None,
        client: None,
        min_revision: 0,
    };

    let reads_before = parts.store.hooks.key_reads();
    let lookup = parts.authenticator.authenticate(presented());
    let changes = async {
        let mut holds = holds.into_iter();
        // Reads 1 and 2: an unrelated key changes while each holds its row.
        for other in &others {
            let (row_read, release) = holds.next().unwrap();
            row_was_read(row_read).await;
            parts
                .manager
                .revoke(
                    &AccountId::parse("acct_2").unwrap(),
                    other,
                    &Actor::in_process(),
                )
                .await
                .unwrap();
            release.send(()).unwrap();
        }
        // Read 3: this key is revoked while the read holds the live row.
        let (row_read, release) = holds.next().unwrap();
        row_was_read(row_read).await;
        parts
            .manager
            .revoke(
                &AccountId::parse("acct_1").unwrap(),
                &id,
                &Actor::in_process(),
            )
            .await
            .unwrap();
        release.send(()).unwrap();
    };
    let (in_flight, ()) = tokio::join!(lookup, changes);

    assert_eq!(
        reason(&in_flight),
        Some(Reason::Revoked),
        "three disturbed reads, then the fourth sees the revocation: {in_flight:?}"
    );
    assert_eq!(
        parts.store.hooks.key_reads() - reads_before,
        LOAD_ATTEMPTS,
        "reads made by the lookup"
    );
    let cached = match surface {
        Surface::CheckScope => parts.cache.lookup_id(&id),
        _ => parts.cache.lookup_digest(&KeyDigest::of(&secret)),
    };
    if let Lookup::Hit(key) = cached {
        assert!(
            key.revoked_at().is_some(),
            "the old row was cached: {key:?}"
        );
    }
    let after = parts.authenticator.authenticate(presented()).await;
    assert_eq!(reason(&after), Some(Reason::Revoked), "{after:?}");
}

/// When every read overlaps a change on the stripe, the lookup gives up
/// after exactly `LOAD_ATTEMPTS` reads and fails closed, instead of
/// answering from a row it cannot vouch for; an undisturbed lookup then
/// succeeds with one read.
async fn a_lookup_disturbed_on_every_read_fails_closed(db: Db) {
    let Some(parts) = parts_with(db, Some(1)).await else {
        return;
    };
    let (_, secret) = create(&parts.manager).await;
    let mut others = Vec::new();
    for i in 0..8 {
        let account = format!("acct_other_{i}");
        others.push((account.clone(), create_in(&parts.manager, &account).await.0));
    }
    let mut holds = Vec::new();
    for _ in 0..others.len() {
        holds.push(parts.store.hooks.arm().await);
    }
    let presented = || Presented {
        surface: Surface::Authenticate,
        min_revision: 0,
        key: PresentedKey::Credential(&secret),
        required: Required::Scopes(&[]),
        account: None,
        client: None,
    };

    let reads_before = parts.store.hooks.key_reads();
    let lookup = parts.authenticator.authenticate(presented());
    tokio::pin!(lookup);
    let mut reads = 0;
    let mut holds = holds.into_iter();
    let mut others = others.iter();
    let verdict = loop {
        let (row_read, release) = holds.next().expect("the lookup gives up in time");
        tokio::select! {
            verdict = &mut lookup => break verdict,
            read = row_read => {
                read.unwrap();
                reads += 1;
                let (account, other) = others.next().unwrap();
                parts
                    .manager
                    .revoke(&AccountId::parse(account).unwrap(), other, &Actor::in_process())
                    .await
                    .unwrap();
                release.send(()).unwrap();
            }
        }
    };
    parts.store.hooks.disarm().await;

    assert_eq!(reason(&verdict), Some(Reason::Unavailable), "{verdict:?}");
    assert_eq!(reads, LOAD_ATTEMPTS, "disturbed reads before giving up");
    assert_eq!(
        parts.store.hooks.key_reads() - reads_before,
        LOAD_ATTEMPTS,
        "reads that reached the store"
    );
    let reads_before = parts.store.hooks.key_reads();
    let undisturbed = parts.authenticator.authenticate(presented()).await;
    assert!(undisturbed.allowed(), "{undisturbed:?}");
    assert_eq!(parts.store.hooks.key_reads() - reads_before, 1);
}

/// The same race across replicas: A is a real server; B is this process's
/// hot path with its own cache and event-log follower, over the same
/// database, its key reads held by `HeldReads`. Each round: B's lookup
/// misses and holds the live row, A revokes (RevokeKey returns), B's
/// follower applies the event, and only then does the lookup go on. B must
/// neither answer "allowed" nor cache the key as live: its insert fails, it
/// reads once more and answers REVOKED.
async fn a_lookup_on_b_held_across_a_revocation_on_a_is_not_allowed_or_cached(db: Db) {
    use keyward::change_feed::{ChangeFeed, FeedSettings};

    let Some(database) = TestDatabase::create(db).await else {
        return;
    };
    let mut a = crate::helpers::spawn_on(database.clone(), crate::helpers::test_config()).await;
    let real = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let held = Decorated::new(Arc::clone(&real), HeldReads::default());
    let cache = Arc::new(KeyCache::new(&Config::default().cache));
    let feed = ChangeFeed::start(
        Arc::clone(&held) as Arc<dyn KeyStore>,
        real,
        Arc::clone(&cache),
        FeedSettings {
            // Rounds are driven by hand; B stays fresh throughout.
            freshness_bound: Duration::from_secs(600),
            ..FeedSettings::default()
        },
    )
    .await
    .unwrap();
    let InProcess {
        authenticator: b, ..
    } = in_process(
        Arc::clone(&held) as Arc<dyn KeyStore>,
        Arc::clone(&cache),
        Arc::clone(feed.freshness()),
    );
    fn presented(secret: &str) -> Presented<'_> {
        Presented {
            surface: Surface::Authenticate,
            min_revision: 0,
            key: PresentedKey::Credential(secret),
            required: Required::Scopes(&[]),
            account: None,
            client: None,
        }
    }

    for round in 0..20 {
        let account = format!("acct_{}", round % 4);
        let (key, secret) = a.create_key(&account, &[]).await;
        let (row_read, release) = held.hooks.arm().await;
        let reads_before = held.hooks.key_reads();

        let lookup = b.authenticate(presented(&secret));
        let revoke_elsewhere = async {
            row_was_read(row_read).await;
            a.revoke(&account, &key.id).await;
            let applied = feed.poll_once().await.unwrap();
            assert!(
                applied >= 1,
                "round {round}: B's follower saw the revocation"
            );
            release.send(()).unwrap();
        };
        let (in_flight, ()) = tokio::join!(lookup, revoke_elsewhere);

        assert_eq!(
            reason(&in_flight),
            Some(Reason::Revoked),
            "round {round}: B answered from the row read before the revocation: {in_flight:?}"
        );
        assert_eq!(
            held.hooks.key_reads() - reads_before,
            2,
            "round {round}: the held read, then one that sees the revocation"
        );
        if let Lookup::Hit(cached) = cache.lookup_digest(&KeyDigest::of(&secret)) {
            assert!(
                cached.revoked_at().is_some(),
                "round {round}: B cached the old row: {cached:?}"
            );
        }
        let after = b.authenticate(presented(&secret)).await;
        assert_eq!(
            reason(&after),
            Some(Reason::Revoked),
            "round {round}: {after:?}"
        );
    }
    a.shutdown().await;
}
