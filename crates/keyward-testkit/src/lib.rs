//! Test harness: a real keyward server on 127.0.0.1:0 with its own fresh
//! database (a SQLite file in a temp dir, or a new PostgreSQL database), and
//! generated gRPC clients.
//!
//! PostgreSQL: `KEYWARD_TEST_DATABASE_URL` (an admin URL; each test creates
//! and drops its own database) when set; otherwise a throwaway cluster
//! started with the machine's `initdb`/`pg_ctl`; otherwise the test reports
//! loudly that it was skipped, and in CI (`CI` set to any truthy value, see
//! `running_in_ci`) it fails instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyward::config::Config;
use keyward::proto;
use keyward::proto::key_service_client::KeyServiceClient;
use keyward::server::{self, RunningServer};
use keyward::storage::DatabaseUrl;
use sqlx::Connection;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

pub mod envoy;
pub mod http_api;
pub mod pg_proxy;
pub mod postgres;
pub mod redis;
pub mod stalling_proxy;
pub mod store_decorator;

/// Whether this is a CI run, where a test that cannot run must fail instead
/// of skipping: `CI` set to any truthy value (see [`is_truthy`]), as CI
/// systems spell it (`true`, `1`, `True`, `yes`, ...).
pub fn running_in_ci() -> bool {
    is_truthy(
        std::env::var_os("CI")
            .as_deref()
            .map(|v| v.to_string_lossy())
            .as_deref(),
    )
}

/// A flag's value read the way CI systems mean it: set unless absent,
/// empty, `0`, `false` or `no` (in any letter case, surrounding whitespace
/// ignored).
pub fn is_truthy(value: Option<&str>) -> bool {
    value.map(str::trim).is_some_and(|v| {
        !v.is_empty()
            && !["0", "false", "no"]
                .iter()
                .any(|f| v.eq_ignore_ascii_case(f))
    })
}

#[test]
fn ci_is_set_by_any_truthy_value() {
    for set in [
        "true",
        "1",
        "TRUE",
        "True",
        "yes",
        "on",
        "github-actions",
        " true ",
    ] {
        assert!(is_truthy(Some(set)), "{set:?} sets CI");
    }
    for unset in [
        None,
        Some(""),
        Some("  "),
        Some("0"),
        Some("false"),
        Some("FALSE"),
        Some("No"),
        Some("no"),
    ] {
        assert!(!is_truthy(unset), "{unset:?} does not set CI");
    }
}

/// The repository's root (where `profiles/`, `examples/` and `tests/` are).
pub fn repository_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port on `ip` that was free a moment ago, for a child process
/// (`keyward serve`, a throwaway PostgreSQL) that must be told its port.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates one test per backend from `async fn name(db: Db)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Db::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Db::Postgres).await;
                }
            }
        )*
    };
}

/// A database that exists for one test (and its replicas).
pub struct TestDatabase {
    pub url: String,
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    /// Admin URL and database name, to drop it afterwards.
    postgres: Option<(String, String)>,
}

static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDatabase {
    /// [`TestDatabase::url`] as keyward takes it.
    pub fn database_url(&self) -> DatabaseUrl {
        self.url.parse().expect("a supported database URL")
    }

    /// A fresh database, or `None` when PostgreSQL is unavailable outside CI.
    pub async fn create(db: Db) -> Option<Arc<Self>> {
        match db {
            Db::Sqlite => Some(Arc::new(Self::sqlite().expect("temp dir"))),
            Db::Postgres => {
                let admin = postgres::admin_url()?;
                Some(Arc::new(Self::create_postgres(&admin).await))
            }
        }
    }

    /// A fresh SQLite file in a temporary directory of its own.
    pub fn sqlite() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("keyward.db").display());
        Ok(Self {
            url,
            db: Db::Sqlite,
            _dir: Some(dir),
            postgres: None,
        })
    }

    /// A fresh database on a given PostgreSQL server (admin URL); panics
    /// with the reason when it cannot be made.
    pub async fn create_postgres(admin: &str) -> Self {
        Self::try_create_postgres(admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {admin}: {e}"))
    }

    /// A fresh database on a given PostgreSQL server (admin URL), dropped
    /// (with `FORCE`) when this value is.
    pub async fn try_create_postgres(admin: &str) -> Result<Self, sqlx::Error> {
        let name = format!(
            "kwt_{}_{}_{}",
            std::process::id(),
            DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4().simple()
        );
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        Ok(Self {
            url: postgres::with_database(admin, &name),
            db: Db::Postgres,
            _dir: None,
            postgres: Some((admin.to_owned(), name)),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A config for tests: defaults, with short intervals where waiting would
/// only slow tests down.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.feed.poll_interval = Duration::from_millis(50);
    config.feed.freshness_bound = Duration::from_secs(2);
    config.last_used_flush_interval = Duration::from_millis(100);
    config.server.shutdown_grace = Duration::from_secs(5);
    config
}

/// A running server and clients for it.
pub struct TestApp {
    pub keys: KeyServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    pub database: Arc<TestDatabase>,
    server: Option<RunningServer>,
}

/// A server on a fresh database with the test config.
pub async fn spawn_app(db: Db) -> Option<TestApp> {
    spawn_app_with(db, test_config()).await
}

pub async fn spawn_app_with(db: Db, config: Config) -> Option<TestApp> {
    let database = TestDatabase::create(db).await?;
    Some(spawn_on(database, config).await)
}

/// A server (one replica) on an existing database.
pub async fn spawn_on(database: Arc<TestDatabase>, mut config: Config) -> TestApp {
    // Set here, as a flag would: no longer the profile's, if it set them.
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.origins.listen = None;
    config.server.database_url = database.database_url();
    config.server.origins.database_url = None;
    let running = server::start(config).await.expect("server starts");
    let addr = running.addr();
    let channel = connect(addr).await;
    TestApp {
        keys: KeyServiceClient::new(channel.clone()),
        health: HealthClient::new(channel.clone()),
        channel,
        database,
        server: Some(running),
    }
}

/// Two replicas on one fresh PostgreSQL database, both with `config`
/// (`None`: no PostgreSQL here, already reported), for tests that count
/// how many of a burst of requests a shared limit or quota allows.
///
/// Their freshness bound is 30 s instead of the tests' usual 2 s. A burst's
/// first requests all miss the cache and read the new key at once (300
/// reads on each replica in the largest test), and on a loaded CI machine
/// some of those waited past 2 s for the pool and were refused as
/// `Unavailable`: fail-closed, as designed, but not the limit's answer
/// these tests count. Freshness itself is tested elsewhere.
pub async fn two_replicas(mut config: Config) -> Option<(TestApp, TestApp)> {
    config.feed.freshness_bound = config.feed.freshness_bound.max(Duration::from_secs(30));
    let database = TestDatabase::create(Db::Postgres).await?;
    let a = spawn_on(database.clone(), config.clone()).await;
    let b = spawn_on(database, config).await;
    Some((a, b))
}

/// `total` concurrent Authenticates of `secret`, alternating between `a`
/// and `b`; the answers in the order the calls were made.
pub async fn authenticate_spread(
    a: &TestApp,
    b: &TestApp,
    secret: &str,
    total: usize,
) -> Vec<proto::AuthenticateResponse> {
    let calls: Vec<_> = (0..total)
        .map(|i| {
            let mut keys = if i % 2 == 0 {
                a.keys.clone()
            } else {
                b.keys.clone()
            };
            let secret = secret.to_owned();
            tokio::spawn(async move {
                keys.authenticate(proto::AuthenticateRequest {
                    credential: secret,
                    ..Default::default()
                })
                .await
                .expect("Authenticate")
                .into_inner()
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(total);
    for call in calls {
        answers.push(call.await.expect("no panic"));
    }
    answers
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to test server")
}

impl TestApp {
    /// The `/metrics` address, when the config turned metrics on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(RunningServer::metrics_addr)
    }

    /// The key-management HTTP API's address, when `server.http_listen`
    /// was set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(RunningServer::http_addr)
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").addr()
    }

    /// Creates a key and returns it with its secret.
    pub async fn create_key(&mut self, account: &str, scopes: &[&str]) -> (proto::Key, String) {
        let response = self
            .keys
            .create_key(proto::CreateKeyRequest {
                account_id: account.into(),
                name: "test key".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            })
            .await
            .expect("CreateKey")
            .into_inner();
        (response.key.expect("key"), response.secret)
    }

    pub async fn authenticate(
        &mut self,
        credential: &str,
        scopes: &[&str],
    ) -> proto::AuthenticateResponse {
        self.keys
            .authenticate(proto::AuthenticateRequest {
                credential: credential.into(),
                required_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                client_ip: String::new(),
                ..Default::default()
            })
            .await
            .expect("Authenticate")
            .into_inner()
    }

    pub async fn revoke(&mut self, account: &str, key_id: &str) -> proto::Key {
        self.keys
            .revoke_key(proto::RevokeKeyRequest {
                account_id: account.into(),
                key_id: key_id.into(),
            })
            .await
            .expect("RevokeKey")
            .into_inner()
            .key
            .expect("key")
    }

    /// Stops the server as SIGTERM would and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop_token().cancel();
        }
    }
}

/// The denial reason of a response, for compact assertions.
pub fn reason(response: &proto::AuthenticateResponse) -> proto::denial::Reason {
    response
        .denial
        .as_ref()
        .map_or(proto::denial::Reason::Unspecified, |d| d.reason())
}

/// Asserts a status is INVALID_ARGUMENT naming `field` (in the message and
/// in the `google.rpc.BadRequest` details).
#[track_caller]
pub fn assert_invalid_argument(status: &tonic::Status, field: &str) {
    use tonic_types::StatusExt;
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "expected INVALID_ARGUMENT, got {status:?}"
    );
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "message should name {field}: {:?}",
        status.message()
    );
    let details = status.get_error_details();
    let violations = details
        .bad_request()
        .map(|b| b.field_violations.clone())
        .unwrap_or_default();
    assert!(
        violations.iter().any(|v| v.field == field),
        "BadRequest details should name {field}: {violations:?}"
    );
}

/// Every text and blob stored for keys, to look for a secret in.
pub async fn stored_key_rows(app: &TestApp) -> Vec<String> {
    let url = &app.database.url;
    let query = "SELECT id || ' ' || account_id || ' ' || name || ' ' || start || ' ' || scopes FROM api_keys";
    match app.database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
        }
    }
}

/// A key's `last_used_at` column as stored (Unix millis), read straight
/// from the database, not through the server (whose GetKey could not tell a
/// stored time from one it only holds in memory).
pub async fn stored_last_used_at(database: &TestDatabase, key_id: &str) -> Option<i64> {
    let query = "SELECT last_used_at FROM api_keys WHERE id = $1";
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            let stored = sqlx::query_scalar(query)
                .bind(key_id)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            stored
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let stored = sqlx::query_scalar(query)
                .bind(key_id)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            stored
        }
    }
}

/// Every stored key hash.
pub async fn stored_hashes(app: &TestApp) -> Vec<Vec<u8>> {
    let url = &app.database.url;
    let query = "SELECT key_hash FROM api_keys";
    match app.database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
        }
    }
}

/// A product's "shown once, stored as SHA-256" promise, for the one key of
/// a fresh database: GetKey and ListKeys never show the secret, the only
/// stored hash is SHA-256 of the whole secret, and no stored column holds
/// its random part.
pub async fn assert_shown_once_and_stored_as_sha256(
    app: &mut TestApp,
    key: &proto::Key,
    secret: &str,
    prefix: &str,
) {
    use sha2::Digest;
    let got = app
        .keys
        .get_key(proto::GetKeyRequest {
            account_id: key.account_id.clone(),
            key_id: key.id.clone(),
        })
        .await
        .expect("GetKey")
        .into_inner();
    let listed = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: key.account_id.clone(),
            include_revoked: true,
            ..Default::default()
        })
        .await
        .expect("ListKeys")
        .into_inner();
    let body = secret
        .strip_prefix(prefix)
        .expect("the secret has the prefix");
    for shown in [format!("{got:?}"), format!("{listed:?}")] {
        assert!(
            !shown.contains(body),
            "the secret can be read again: {shown}"
        );
    }
    assert_eq!(
        stored_hashes(app).await,
        vec![sha2::Sha256::digest(secret.as_bytes()).to_vec()]
    );
    for row in stored_key_rows(app).await {
        assert!(
            !row.contains(body),
            "a stored column holds the secret: {row}"
        );
    }
}

/// Asserts that `shown` (whole seconds, rounded up, as in `retry-after`) is
/// what is left of a `length`-long period that began after `began` (an
/// instant taken just before the request that started it): at most
/// `length`, and at least `length` less the time since `began`, so however
/// long the calls in between took.
#[track_caller]
pub fn assert_seconds_left(shown: u64, length: Duration, began: tokio::time::Instant) {
    let elapsed = began.elapsed();
    let lowest = length.saturating_sub(elapsed).as_secs();
    let highest = length.as_secs() + u64::from(length.subsec_nanos() > 0);
    assert!(
        (lowest..=highest).contains(&shown),
        "{shown} s left of {length:?} that began at most {elapsed:?} ago (expected {lowest} to {highest})"
    );
}

/// As [`assert_seconds_left`], for a count of whole milliseconds (such as
/// `retry_after_ms`, rounded down).
#[track_caller]
pub fn assert_millis_left(shown: u64, length: Duration, began: tokio::time::Instant) {
    let elapsed = began.elapsed();
    let lowest = u64::try_from(length.saturating_sub(elapsed).as_millis()).unwrap();
    let highest = u64::try_from(length.as_millis()).unwrap();
    assert!(
        (lowest..=highest).contains(&shown),
        "{shown} ms left of {length:?} that began at most {elapsed:?} ago (expected {lowest} to {highest})"
    );
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
