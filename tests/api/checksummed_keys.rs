//! Checksummed keys (`keys.checksum`, on in `profiles/default.toml`): the
//! generated keys pass; a key with one character changed (in its random
//! part or its checksum) is MALFORMED_CREDENTIAL before any store call and
//! counts as a failed attempt; bad config is named; and the README's
//! secret-scanner regex for each shipped profile is the one its key format
//! gives, and matches the keys it generates.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyward::audit::Actor;
use keyward::authenticator::{Authenticator, Presented, PresentedKey, Required, Verdict};
use keyward::change_feed::Freshness;
use keyward::config::Config;
use keyward::denial::Reason;
use keyward::domain::{AccountId, KeyName};
use keyward::key_cache::KeyCache;
use keyward::key_management::CreateKey;
use keyward::proto;
use keyward::storage::{self, KeyStore, PoolSettings};
use keyward::telemetry::Surface;

use crate::helpers::store_decorator::{Call, Decorated, InProcess, StoreHooks, in_process_with};
use crate::helpers::{Db, TestDatabase, spawn_app_with};
use crate::on_both_databases;

on_both_databases!(altered_keys_are_malformed_before_any_store_call_and_count_as_failures);

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

fn default_profile() -> Config {
    Config::load(&profiles_dir().join("default.toml")).expect("the default profile loads")
}

/// Counts the calls that reach the real store.
#[derive(Default)]
struct Counts {
    all: AtomicUsize,
    find_by_digest: AtomicUsize,
}

impl StoreHooks for Counts {
    fn before(&self, call: Call) {
        self.all.fetch_add(1, Ordering::SeqCst);
        if call == Call::FindByDigest {
            self.find_by_digest.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn check(authenticator: &Authenticator, credential: &str, client: IpAddr) -> Verdict {
    authenticator
        .authenticate(Presented {
            surface: Surface::Authenticate,
            key: PresentedKey::Credential(credential),
            required: Required::Scopes(&[]),
            account: None,
            client: Some(client),
            min_revision: 0,
        })
        .await
}

fn reason(verdict: &Verdict) -> Option<Reason> {
    verdict.denial().map(|d| d.reason)
}

/// `key` with the character at `position` replaced by another base62 one.
fn altered(key: &str, position: usize) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes[position] = if bytes[position] == b'x' { b'y' } else { b'x' };
    String::from_utf8(bytes).unwrap()
}

async fn altered_keys_are_malformed_before_any_store_call_and_count_as_failures(db: Db) {
    let Some(database) = TestDatabase::create(db).await else {
        return;
    };
    let config = default_profile();
    assert!(config.key_format.checksum());
    let real = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let store = Decorated::new(real, Counts::default());
    let cache = Arc::new(KeyCache::new(&config.cache));
    let freshness = Arc::new(Freshness::new(Duration::from_secs(600)));
    freshness.confirm(Instant::now());
    let InProcess {
        authenticator,
        manager,
        flusher: _flusher,
    } = in_process_with(
        &config,
        Arc::clone(&store) as Arc<dyn KeyStore>,
        cache,
        freshness,
    );
    let (written, secret) = manager
        .create(
            CreateKey {
                account_id: AccountId::parse("acct_1").unwrap(),
                name: KeyName::parse("checksummed").unwrap(),
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
    let secret = secret.into_exposed();
    assert_eq!(written.record.start, secret[..9]);
    assert_eq!(secret.len(), "kw_".len() + 49);

    let caller: IpAddr = "198.51.100.4".parse().unwrap();
    let allowed = check(&authenticator, &format!("Bearer {secret}"), caller).await;
    assert!(allowed.allowed(), "{allowed:?}");
    let before = store.hooks.all.load(Ordering::SeqCst);
    assert_eq!(store.hooks.find_by_digest.load(Ordering::SeqCst), 1);

    // One character changed in the random part, or in the checksum.
    let attacker: IpAddr = "203.0.113.9".parse().unwrap();
    let max_failures = config.bans.max_failures;
    let positions = [3, 3 + 21, secret.len() - 6, secret.len() - 1];
    for attempt in 0..max_failures as usize {
        let guess = altered(&secret, positions[attempt % positions.len()]);
        let verdict = check(&authenticator, &format!("Bearer {guess}"), attacker).await;
        assert_eq!(
            reason(&verdict),
            Some(Reason::MalformedCredential),
            "{verdict:?}"
        );
    }
    assert_eq!(
        store.hooks.all.load(Ordering::SeqCst),
        before,
        "a key with a wrong checksum reached the store"
    );
    // Those were failed attempts: the address is now banned, even with
    // the real key.
    let banned = check(&authenticator, &format!("Bearer {secret}"), attacker).await;
    assert_eq!(
        reason(&banned),
        Some(Reason::TooManyFailedAttempts),
        "{banned:?}"
    );
    // The real key still works from elsewhere.
    let allowed = check(&authenticator, &format!("Bearer {secret}"), caller).await;
    assert!(allowed.allowed(), "{allowed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_profile_issues_checksummed_keys_over_grpc() {
    let mut config = default_profile();
    config.feed.poll_interval = Duration::from_millis(50);
    let mut app = spawn_app_with(Db::Sqlite, config)
        .await
        .expect("SQLite always runs");
    let (key, secret) = app.create_key("acct_1", &["projects:read"]).await;
    assert!(secret.starts_with("kw_"), "{secret}");
    let scanner = regex::Regex::new(&format!(
        "^{}$",
        default_profile().key_format.scanner_regex()
    ))
    .unwrap();
    assert!(scanner.is_match(&secret));
    let allowed = app.authenticate(&format!("Bearer {secret}"), &[]).await;
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(allowed.key.unwrap().id, key.id);
    let response = app
        .authenticate(
            &format!("Bearer {}", altered(&secret, secret.len() - 2)),
            &[],
        )
        .await;
    assert_eq!(
        crate::helpers::reason(&response),
        proto::denial::Reason::MalformedCredential
    );
    app.shutdown().await;
}

#[test]
fn bad_checksum_settings_are_named() {
    for (text, reason) in [
        ("[keys]\nchecksum = \"yes\"\n", "invalid type"),
        (
            "[keys]\nbody_length = 32\nchecksum = true\n",
            "at least 128 are required",
        ),
    ] {
        let error = Config::parse(text, "checksum-test.toml").unwrap_err();
        assert_eq!(error.key, "keys.checksum", "{error}");
        assert!(error.reason.contains(reason), "{error}");
    }
    let off = Config::parse("[keys]\nchecksum = false\n", "checksum-test.toml").unwrap();
    assert!(!off.key_format.checksum());
}

/// The README's table of scanner regexes, by profile.
fn readme_scanner_regexes() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- scanner-regexes -->")
        .expect("the README has the scanner table");
    let end = readme[start..]
        .find("<!-- /scanner-regexes -->")
        .expect("the scanner table ends")
        + start;
    readme[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |cell: &str| cell.trim_matches('`').to_owned();
            (unquote(cells[1]), unquote(cells[cells.len() - 2]))
        })
        .collect()
}

#[test]
fn the_readme_gives_each_profile_the_scanner_regex_its_keys_match() {
    let mut shipped: Vec<String> = std::fs::read_dir(profiles_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    let table = readme_scanner_regexes();
    let mut documented: Vec<String> = table.iter().map(|(name, _)| name.clone()).collect();
    documented.sort();
    assert_eq!(documented, shipped, "a profile without a README regex");

    for (name, documented) in table {
        let config = Config::load(&profiles_dir().join(format!("{name}.toml"))).unwrap();
        let format = &config.key_format;
        assert_eq!(documented, format.scanner_regex(), "{name}");
        assert_eq!(format.checksum(), name == "default", "{name}");
        let whole = regex::Regex::new(&format!("^{documented}$")).unwrap();
        let within = regex::Regex::new(&documented).unwrap();
        for _ in 0..200 {
            let (secret, _, _) = format.generate().unwrap();
            let key = secret.expose();
            assert!(whole.is_match(key), "{name}: {key}");
            let leaked = format!("export API_KEY=\"{key}\"\n");
            assert_eq!(
                within.find(&leaked).map(|m| m.as_str()),
                Some(key),
                "{name}"
            );
        }
        // Too short a key is no find.
        let (secret, _, _) = format.generate().unwrap();
        let short = &secret.expose()[..secret.expose().len() - 1];
        assert!(!whole.is_match(short), "{name}");
    }
}
