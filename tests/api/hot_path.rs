//! The hot path's promises about the database, shown by what reaches it:
//! the real store (SQLite or PostgreSQL) behind a decorator that counts
//! every call, under an in-process authenticator built as `server.rs`
//! builds it (no follower or flusher task, so every counted call came from
//! the requests or from the test's own flush).
//!
//! - a cache hit makes no store call;
//! - a repeated unknown key is read once, then answered from the negative
//!   cache;
//! - a malformed credential makes no store call;
//! - a banned address is refused before its key is looked at, even a valid
//!   key, even when the replica cannot prove it is fresh;
//! - uses are written by the flusher, one row per key per flush, never on
//!   the request path; CheckScope by key id is not a use.

use keyward::audit::Actor;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyward::authenticator::{Authenticator, Presented, PresentedKey, Required, Verdict};
use keyward::change_feed::Freshness;
use keyward::config::Config;
use keyward::denial::Reason;
use keyward::domain::{AccountId, KeyId, KeyName, UnixMillis};
use keyward::key_cache::KeyCache;
use keyward::key_management::{CreateKey, KeyManager};
use keyward::last_use::LastUseFlusher;
use keyward::storage::{self, KeyStore, PoolSettings};
use keyward::telemetry::Surface;

use crate::helpers::store_decorator::{Call, Decorated, InProcess, StoreHooks, in_process};
use crate::helpers::{Db, TestDatabase};
use crate::on_both_databases;

on_both_databases!(
    cache_hits_make_no_store_calls,
    a_repeated_unknown_key_is_read_once,
    malformed_credentials_make_no_store_calls,
    a_banned_address_is_refused_before_any_store_call,
    uses_are_written_once_per_key_per_flush_and_never_by_a_request,
);

/// How many times each request is repeated.
const REPEATS: usize = 50;

/// Counts every call that reaches the real store.
#[derive(Default)]
struct Counts {
    all: AtomicUsize,
    find_by_digest: AtomicUsize,
    record_last_used: AtomicUsize,
    /// Keys written by `record_last_used`, over all its calls.
    rows_written: AtomicUsize,
}

impl StoreHooks for Counts {
    fn before(&self, call: Call) {
        self.all.fetch_add(1, Ordering::SeqCst);
        match call {
            Call::FindByDigest => {
                self.find_by_digest.fetch_add(1, Ordering::SeqCst);
            }
            Call::RecordLastUsed { rows } => {
                self.record_last_used.fetch_add(1, Ordering::SeqCst);
                self.rows_written.fetch_add(rows, Ordering::SeqCst);
            }
            Call::FindById | Call::Other => {}
        }
    }
}

impl Counts {
    fn all(&self) -> usize {
        self.all.load(Ordering::SeqCst)
    }

    fn find_by_digest(&self) -> usize {
        self.find_by_digest.load(Ordering::SeqCst)
    }

    fn record_last_used(&self) -> usize {
        self.record_last_used.load(Ordering::SeqCst)
    }

    fn rows_written(&self) -> usize {
        self.rows_written.load(Ordering::SeqCst)
    }
}

struct Parts {
    store: Arc<Decorated<Counts>>,
    authenticator: Authenticator,
    manager: KeyManager,
    flusher: LastUseFlusher,
    freshness: Arc<Freshness>,
    _database: Arc<TestDatabase>,
}

async fn parts(db: Db) -> Option<Parts> {
    parts_fresh_for(db, Duration::from_secs(600)).await
}

/// Parts whose freshness, proved once at the start, lasts `bound`.
async fn parts_fresh_for(db: Db, bound: Duration) -> Option<Parts> {
    let database = TestDatabase::create(db).await?;
    let real = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let store = Decorated::new(real, Counts::default());
    let cache = Arc::new(KeyCache::new(&Config::default().cache));
    let freshness = Arc::new(Freshness::new(bound));
    freshness.confirm(Instant::now());
    let InProcess {
        authenticator,
        manager,
        flusher,
    } = in_process(
        Arc::clone(&store) as Arc<dyn KeyStore>,
        cache,
        Arc::clone(&freshness),
    );
    Some(Parts {
        store,
        authenticator,
        manager,
        flusher,
        freshness,
        _database: database,
    })
}

fn account() -> AccountId {
    AccountId::parse("acct_1").unwrap()
}

async fn create(manager: &KeyManager) -> (KeyId, String) {
    let (record, secret) = manager
        .create(
            CreateKey {
                account_id: account(),
                name: KeyName::parse("counted").unwrap(),
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

async fn check(
    authenticator: &Authenticator,
    surface: Surface,
    key: PresentedKey<'_>,
    client: Option<IpAddr>,
) -> Verdict {
    authenticator
        .authenticate(Presented {
            surface,
            key,
            required: Required::Scopes(&[]),
            account: None,
            client,
            min_revision: 0,
        })
        .await
}

async fn authenticate(authenticator: &Authenticator, credential: &str) -> Verdict {
    check(
        authenticator,
        Surface::Authenticate,
        PresentedKey::Credential(credential),
        None,
    )
    .await
}

fn reason(verdict: &Verdict) -> Option<Reason> {
    verdict.denial().map(|d| d.reason)
}

fn unknown_key() -> String {
    format!("cc_{}", "0".repeat(64))
}

async fn cache_hits_make_no_store_calls(db: Db) {
    let Some(parts) = parts(db).await else { return };
    let (id, secret) = create(&parts.manager).await;
    let first = authenticate(&parts.authenticator, &secret).await;
    assert!(first.allowed(), "{first:?}");
    let by_id = check(
        &parts.authenticator,
        Surface::CheckScope,
        PresentedKey::Id(&id),
        None,
    )
    .await;
    assert!(by_id.allowed(), "{by_id:?}");
    let before = parts.store.hooks.all();

    for _ in 0..REPEATS {
        for verdict in [
            authenticate(&parts.authenticator, &format!("Bearer {secret}")).await,
            check(
                &parts.authenticator,
                Surface::ExtAuthzCheck,
                PresentedKey::BareKey(&secret),
                None,
            )
            .await,
            check(
                &parts.authenticator,
                Surface::CheckScope,
                PresentedKey::Id(&id),
                None,
            )
            .await,
        ] {
            assert!(verdict.allowed(), "{verdict:?}");
        }
    }

    assert_eq!(
        parts.store.hooks.all(),
        before,
        "{} cache hits reached the store",
        3 * REPEATS
    );
}

async fn a_repeated_unknown_key_is_read_once(db: Db) {
    let Some(parts) = parts(db).await else { return };
    let unknown = unknown_key();

    for _ in 0..REPEATS {
        let verdict = authenticate(&parts.authenticator, &unknown).await;
        assert_eq!(reason(&verdict), Some(Reason::UnknownKey), "{verdict:?}");
    }

    assert_eq!(
        parts.store.hooks.find_by_digest(),
        1,
        "the first read is remembered as unknown; the rest are not read"
    );
    assert_eq!(parts.store.hooks.all(), 1);
}

async fn malformed_credentials_make_no_store_calls(db: Db) {
    let Some(parts) = parts(db).await else { return };
    let huge = format!("Bearer cc_{}", "a".repeat(1 << 20));
    let cases = [
        ("", Reason::MissingCredential),
        ("Bearer ", Reason::MissingCredential),
        ("Basic dXNlcjpwYXNz", Reason::MissingCredential),
        ("Bearer cc_abc", Reason::MalformedCredential),
        (
            &format!("Bearer cc_{}", "A".repeat(64)),
            Reason::MalformedCredential,
        ),
        (
            &format!("cc_{}", "a".repeat(65)),
            Reason::MalformedCredential,
        ),
        (&huge, Reason::MalformedCredential),
    ];

    for _ in 0..REPEATS {
        for (credential, expected) in &cases {
            let verdict = authenticate(&parts.authenticator, credential).await;
            assert_eq!(reason(&verdict), Some(*expected), "{verdict:?}");
        }
        let bare = check(
            &parts.authenticator,
            Surface::ExtAuthzCheck,
            PresentedKey::BareKey("cc_short"),
            None,
        )
        .await;
        assert_eq!(reason(&bare), Some(Reason::MalformedCredential));
    }

    assert_eq!(
        parts.store.hooks.all(),
        0,
        "a malformed credential reached the store"
    );
}

async fn a_banned_address_is_refused_before_any_store_call(db: Db) {
    // Fresh long enough for the ban to be set and checked (in-process,
    // milliseconds), then left to go stale, which is polled for below.
    let Some(parts) = parts_fresh_for(db, Duration::from_secs(5)).await else {
        return;
    };
    // Created but never looked up: not in the cache, so answering it at
    // all would need a read.
    let (_, secret) = create(&parts.manager).await;
    let attacker: IpAddr = "203.0.113.7".parse().unwrap();
    let max_failures = Config::default().bans.max_failures;
    for attempt in 0..max_failures {
        let guess = format!("cc_{:064x}", attempt);
        let verdict = check(
            &parts.authenticator,
            Surface::Authenticate,
            PresentedKey::Credential(&guess),
            Some(attacker),
        )
        .await;
        assert_eq!(reason(&verdict), Some(Reason::UnknownKey), "{verdict:?}");
    }
    let before = parts.store.hooks.all();

    for surface in [
        Surface::Authenticate,
        Surface::CheckScope,
        Surface::ExtAuthzCheck,
    ] {
        for _ in 0..REPEATS {
            let verdict = check(
                &parts.authenticator,
                surface,
                PresentedKey::Credential(&secret),
                Some(attacker),
            )
            .await;
            assert_eq!(
                reason(&verdict),
                Some(Reason::TooManyFailedAttempts),
                "{verdict:?}"
            );
            assert!(verdict.key().is_none());
        }
    }
    assert_eq!(
        parts.store.hooks.all(),
        before,
        "a banned address reached the store"
    );

    // Another address with the same key is served (and that one is read).
    let neighbour: IpAddr = "203.0.113.8".parse().unwrap();
    let served = check(
        &parts.authenticator,
        Surface::Authenticate,
        PresentedKey::Credential(&secret),
        Some(neighbour),
    )
    .await;
    assert!(served.allowed(), "{served:?}");
    assert_eq!(parts.store.hooks.all(), before + 1);
    assert_eq!(
        parts.store.hooks.find_by_digest(),
        max_failures as usize + 1
    );

    // A replica that cannot prove it is fresh still refuses the banned
    // address as banned (not as unavailable): the ban comes first.
    assert!(
        crate::helpers::eventually(Duration::from_secs(30), async || !parts
            .freshness
            .is_fresh())
        .await,
        "the proof of freshness never went stale"
    );
    let stale = &parts.authenticator;
    let verdict = check(
        stale,
        Surface::Authenticate,
        PresentedKey::Credential(&secret),
        Some(attacker),
    )
    .await;
    assert_eq!(reason(&verdict), Some(Reason::TooManyFailedAttempts));
    let verdict = check(
        stale,
        Surface::Authenticate,
        PresentedKey::Credential(&secret),
        Some(neighbour),
    )
    .await;
    assert_eq!(reason(&verdict), Some(Reason::Unavailable));
}

async fn uses_are_written_once_per_key_per_flush_and_never_by_a_request(db: Db) {
    let Some(mut parts) = parts(db).await else {
        return;
    };
    let (id, secret) = create(&parts.manager).await;
    let (idle_id, _) = create(&parts.manager).await;
    let started = UnixMillis::now();

    for round in 1..=2 {
        for i in 0..20 {
            let surface = [
                Surface::Authenticate,
                Surface::CheckScope,
                Surface::ExtAuthzCheck,
            ][i % 3];
            let verdict = check(
                &parts.authenticator,
                surface,
                PresentedKey::Credential(&secret),
                None,
            )
            .await;
            assert!(verdict.allowed(), "{verdict:?}");
            // By id, the caller already authenticated the request: not a use.
            let by_id = check(
                &parts.authenticator,
                Surface::CheckScope,
                PresentedKey::Id(&idle_id),
                None,
            )
            .await;
            assert!(by_id.allowed(), "{by_id:?}");
        }
        assert_eq!(
            parts.store.hooks.record_last_used(),
            round - 1,
            "round {round}: a request wrote its use"
        );

        let written = parts.flusher.flush().await;

        assert_eq!(written, 1, "round {round}: one row for 20 uses of one key");
        assert_eq!(parts.store.hooks.record_last_used(), round);
        assert_eq!(parts.store.hooks.rows_written(), round);
    }
    assert_eq!(
        parts.flusher.flush().await,
        0,
        "nothing used, nothing written"
    );
    assert_eq!(parts.store.hooks.record_last_used(), 2);

    let used = parts.manager.get(&account(), &id).await.unwrap();
    let last_used = used.last_used_at.expect("the use was stored");
    assert!(last_used >= started, "{last_used:?} < {started:?}");
    let idle = parts.manager.get(&account(), &idle_id).await.unwrap();
    assert_eq!(idle.last_used_at, None, "CheckScope by id noted a use");
}
