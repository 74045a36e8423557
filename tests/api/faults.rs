//! Faults between a keyward replica and its PostgreSQL, injected for real:
//! replies stalled on the network by a TCP proxy (`helpers::stalling_proxy`),
//! sessions killed with `pg_terminate_backend`, a database stopped and
//! started again. Replica A writes (straight to PostgreSQL); replica B
//! suffers the fault. Each test checks keyward's promise over every answer
//! B gave: once RevokeKey has returned on A, B never answers "allowed" for
//! that key later than `feed.freshness_bound` after; a replica that cannot
//! prove it is current answers UNAVAILABLE with health NOT_SERVING; and it
//! recovers without a restart. A test only passes having seen at least
//! `AFTER_DEADLINE` answers per revoked key asked after its deadline.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward::config::Config;
use keyward::proto::key_service_client::KeyServiceClient;
use keyward::proto::{self, denial::Reason};
use keyward::server::{self, RunningServer};
use sha2::Digest;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::postgres::{ThrowawayCluster, report_skip};
use crate::helpers::stalling_proxy::{Hold, StallingProxy};
use crate::helpers::{
    Db, TestApp, TestDatabase, connect, eventually, reason, spawn_on, test_config,
};

/// Answers asked after a revoked key's deadline that a test must have seen,
/// per key, so it cannot pass by not looking.
const AFTER_DEADLINE: usize = 10;

/// The client receives an answer a little after the server gave it. An
/// allowed answer to a request sent before the deadline counts as late when
/// received more than this after it (the stalls injected here last at least
/// a second past the bound); one to a request sent after the deadline is
/// late however it was received.
const RECEIPT_SLACK: Duration = Duration::from_millis(250);

/// The freshness bound every replica here runs with.
fn bound() -> Duration {
    test_config().feed.freshness_bound
}

/// Replica B: a server on a database URL of its own (through the proxy, or
/// naming B in `application_name`).
pub(crate) struct Replica {
    server: Option<RunningServer>,
    pub(crate) keys: KeyServiceClient<Channel>,
    channel: Channel,
    health: HealthClient<Channel>,
}

impl Replica {
    pub(crate) async fn start(database_url: String, mut config: Config) -> Self {
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.database_url = database_url.parse().unwrap();
        let server = server::start(config).await.expect("replica B starts");
        let channel = connect(server.addr()).await;
        Self {
            keys: KeyServiceClient::new(channel.clone()),
            health: HealthClient::new(channel.clone()),
            channel,
            server: Some(server),
        }
    }

    async fn status(&self) -> ServingStatus {
        let mut health = self.health.clone();
        health
            .check(HealthCheckRequest::default())
            .await
            .map_or(ServingStatus::Unknown, |r| r.into_inner().status())
    }

    /// Whether health reports `status` within `within`.
    async fn becomes(&self, status: ServingStatus, within: Duration) -> bool {
        eventually(within, async || self.status().await == status).await
    }

    async fn authenticate(&self, secret: &str) -> proto::AuthenticateResponse {
        authenticate(&self.keys, secret).await
    }

    async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("B stops cleanly");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop_token().cancel();
        }
    }
}

async fn authenticate(
    keys: &KeyServiceClient<Channel>,
    secret: &str,
) -> proto::AuthenticateResponse {
    try_authenticate(keys, secret)
        .await
        .expect("Authenticate on B")
}

async fn try_authenticate(
    keys: &KeyServiceClient<Channel>,
    secret: &str,
) -> Result<proto::AuthenticateResponse, tonic::Status> {
    let response = keys
        .clone()
        .authenticate(proto::AuthenticateRequest {
            credential: secret.into(),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner())
}

async fn health_of(app: &TestApp) -> ServingStatus {
    app.health
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .map_or(ServingStatus::Unknown, |r| r.into_inner().status())
}

/// One answer B gave, and when it was asked and received.
#[derive(Debug, Clone, Copy)]
struct Answer {
    key: usize,
    sent: Instant,
    received: Instant,
    allowed: bool,
    reason: Reason,
}

/// Every answer B gave about the test's keys (by index), and when each key's
/// RevokeKey returned on A.
struct Ledger {
    bound: Duration,
    answers: Mutex<Vec<Answer>>,
    revoked: Mutex<Vec<(usize, Instant)>>,
}

impl Ledger {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            bound: bound(),
            answers: Mutex::new(Vec::new()),
            revoked: Mutex::new(Vec::new()),
        })
    }

    /// Asks B about key `key` and records the answer.
    async fn ask(&self, b: &KeyServiceClient<Channel>, key: usize, secret: &str) -> Answer {
        self.try_ask(b, key, secret)
            .await
            .expect("Authenticate on B")
    }

    async fn try_ask(
        &self,
        b: &KeyServiceClient<Channel>,
        key: usize,
        secret: &str,
    ) -> Result<Answer, tonic::Status> {
        let sent = Instant::now();
        let response = try_authenticate(b, secret).await?;
        let answer = Answer {
            key,
            sent,
            received: Instant::now(),
            allowed: response.allowed,
            reason: reason(&response),
        };
        self.answers.lock().unwrap().push(answer);
        Ok(answer)
    }

    /// Revokes key `key` on A; its revocation time is when RevokeKey returned.
    async fn revoke(&self, a: &mut TestApp, key: usize, account: &str, id: &str) -> Instant {
        a.revoke(account, id).await;
        let at = Instant::now();
        self.revoked.lock().unwrap().push((key, at));
        at
    }

    fn revoked_at(&self, key: usize) -> Option<Instant> {
        let revoked = self.revoked.lock().unwrap();
        revoked.iter().find(|(k, _)| *k == key).map(|(_, at)| *at)
    }

    fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    /// Answers about key `key` asked after its deadline (revocation + bound).
    fn after_deadline(&self, key: usize) -> Vec<Answer> {
        let Some(revoked) = self.revoked_at(key) else {
            return Vec::new();
        };
        let deadline = revoked + self.bound;
        self.answers()
            .into_iter()
            .filter(|a| a.key == key && a.sent > deadline)
            .collect()
    }

    /// Every "allowed" for a revoked key later than the bound after its
    /// revocation, described.
    fn late_allowed(&self) -> Vec<String> {
        let revoked = self.revoked.lock().unwrap().clone();
        let mut late = Vec::new();
        for answer in self.answers() {
            let Some(&(_, at)) = revoked.iter().find(|(k, _)| *k == answer.key) else {
                continue;
            };
            let deadline = at + self.bound;
            if answer.allowed
                && (answer.sent > deadline || answer.received > deadline + RECEIPT_SLACK)
            {
                late.push(format!(
                    "key {}: allowed, asked {} and answered {} after RevokeKey returned on A",
                    answer.key,
                    since(at, answer.sent),
                    since(at, answer.received),
                ));
            }
        }
        late
    }

    /// No revoked key was allowed later than the bound.
    #[track_caller]
    fn assert_none_late(&self) {
        let late = self.late_allowed();
        assert!(
            late.is_empty(),
            "B answered allowed later than the freshness bound ({:?}) after a revocation, \
             {} time(s): {:#?}",
            self.bound,
            late.len(),
            &late[..late.len().min(10)]
        );
    }

    /// The promise, checked over every answer: none late, and enough
    /// answers asked after each revoked key's deadline to have looked.
    #[track_caller]
    fn assert_promise(&self) {
        self.assert_none_late();
        let revoked = self.revoked.lock().unwrap().clone();
        assert!(!revoked.is_empty(), "the test revoked nothing");
        for (key, _) in revoked {
            let after = self.after_deadline(key).len();
            assert!(
                after >= AFTER_DEADLINE,
                "key {key}: only {after} answers asked after its deadline (need {AFTER_DEADLINE})"
            );
        }
    }
}

/// `at` relative to `origin`, signed.
fn since(origin: Instant, at: Instant) -> String {
    if at >= origin {
        format!("+{:.3}s", (at - origin).as_secs_f64())
    } else {
        format!("-{:.3}s", (origin - at).as_secs_f64())
    }
}

/// `tasks` tasks that each ask B about `keys` in turn (starting at
/// different keys), `pause` apart, recording every answer, until `stop`.
/// Tests hold a drop guard of `stop`, so a failed test's load ends quietly.
fn load(
    ledger: &Arc<Ledger>,
    b: &Replica,
    keys: &[(usize, String)],
    tasks: usize,
    pause: Duration,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    (0..tasks)
        .map(|task| {
            let ledger = Arc::clone(ledger);
            let client = b.keys.clone();
            let keys = keys.to_vec();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut next = task;
                while !stop.is_cancelled() {
                    let (key, secret) = &keys[next % keys.len()];
                    if let Err(status) = ledger.try_ask(&client, *key, secret).await {
                        // A test that failed has stopped B already.
                        assert!(stop.is_cancelled(), "Authenticate on B: {status:?}");
                        return;
                    }
                    next += 1;
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            })
        })
        .collect()
}

/// Stops the load and waits for its last answers.
async fn finish(stop: &CancellationToken, tasks: Vec<JoinHandle<()>>) {
    stop.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("a load task never got its last answer")
            .expect("load task");
    }
}

/// The address a PostgreSQL URL names.
pub(crate) fn server_address(url: &str) -> SocketAddr {
    let options = sqlx::postgres::PgConnectOptions::from_str(url).expect("a PostgreSQL URL");
    (options.get_host(), options.get_port())
        .to_socket_addrs()
        .expect("resolvable")
        .next()
        .expect("an address")
}

fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

/// After recovery: a key created on A is allowed on B, and its revocation
/// on A reaches B within the bound.
async fn revocations_reach_b_again(a: &mut TestApp, b: &Replica, account: &str) {
    let (key, secret) = a.create_key(account, &[]).await;
    assert!(
        eventually(Duration::from_secs(10), async || b
            .authenticate(&secret)
            .await
            .allowed)
        .await,
        "B does not allow a new key after recovering"
    );
    a.revoke(account, &key.id).await;
    assert!(
        eventually(bound(), async || reason(&b.authenticate(&secret).await)
            == Reason::Revoked)
        .await,
        "after recovering, a revocation did not reach B within the bound"
    );
}

/// A and B on one fresh PostgreSQL database; B reaches it only through a
/// stalling proxy (same database name, the proxy's port).
struct ProxiedPair {
    a: TestApp,
    b: Replica,
    proxy: StallingProxy,
}

async fn proxied_pair() -> Option<ProxiedPair> {
    proxied_pair_with(test_config).await
}

/// As `proxied_pair`, both replicas with the config `config` makes.
async fn proxied_pair_with(config: fn() -> Config) -> Option<ProxiedPair> {
    let database = TestDatabase::create(Db::Postgres).await?;
    let proxy = StallingProxy::start(server_address(&database.url)).await;
    let a = spawn_on(database.clone(), config()).await;
    let b = Replica::start(proxy.url_for(&database.url), config()).await;
    assert!(
        eventually(Duration::from_secs(10), async || proxy.listeners_seen() > 0).await,
        "B's listener never connected through the proxy"
    );
    Some(ProxiedPair { a, b, proxy })
}

/// The proxy itself, against an echo server: while holding, replies are kept
/// (counted, not delivered); release delivers them in order; the
/// connection that sent `LISTEN` can be held alone; a trigger split across
/// writes fires; cut closes the connections open then, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stalling_proxy_holds_releases_in_order_and_cuts() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let proxy = StallingProxy::start(echo_addr).await;
    let port = proxy.addr().port();
    assert_eq!(
        proxy.url_for("postgres://postgres@127.0.0.1:5432/kwt_1?application_name=b"),
        format!("postgres://postgres@127.0.0.1:{port}/kwt_1?application_name=b")
    );
    assert_eq!(
        proxy.url_for("postgres://u:p@localhost/db"),
        format!("postgres://u:p@127.0.0.1:{port}/db")
    );

    async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buffer = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buffer))
            .await
            .expect("bytes arrive")
            .unwrap();
        buffer
    }
    let held = async |bytes: u64| {
        eventually(Duration::from_secs(5), async || proxy.held_bytes() == bytes).await
    };

    let mut plain = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut listener = TcpStream::connect(proxy.addr()).await.unwrap();
    plain.write_all(b"one").await.unwrap();
    assert_eq!(read_n(&mut plain, 3).await, b"one");

    proxy.hold(Hold::All);
    plain.write_all(b"two").await.unwrap();
    assert!(held(3).await);
    plain.write_all(b"three").await.unwrap();
    assert!(held(8).await);
    proxy.release();
    assert_eq!(read_n(&mut plain, 8).await, b"twothree");
    assert!(held(0).await);

    listener.write_all(b"LISTEN \"x\"").await.unwrap();
    assert_eq!(read_n(&mut listener, 10).await, b"LISTEN \"x\"");
    assert_eq!(proxy.listeners_seen(), 1);
    proxy.hold(Hold::Listener);
    plain.write_all(b"a").await.unwrap();
    assert_eq!(read_n(&mut plain, 1).await, b"a");
    listener.write_all(b"b").await.unwrap();
    assert!(held(1).await);
    proxy.release();
    assert_eq!(read_n(&mut listener, 1).await, b"b");

    proxy.hold_all_once_sent(b"NEEDLE");
    plain.write_all(b"x").await.unwrap();
    assert_eq!(read_n(&mut plain, 1).await, b"x");
    // Split across two writes (the first echoed before the second is sent).
    plain.write_all(b"NEE").await.unwrap();
    assert_eq!(read_n(&mut plain, 3).await, b"NEE");
    plain.write_all(b"DLE").await.unwrap();
    assert!(held(3).await, "the trigger fired and its reply is held");
    assert_eq!(proxy.holding(), Hold::All);

    proxy.cut();
    proxy.release();
    for stream in [&mut plain, &mut listener] {
        let mut buffer = [0; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("a cut connection closes");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(held(0).await, "cut discards what was held");
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    after.write_all(b"later").await.unwrap();
    assert_eq!(read_n(&mut after, 5).await, b"later");
}

/// Fault: B's read of a key it has not cached stalls on the network for the
/// bound plus a second. The proxy holds every reply to B from the moment B
/// sends the key's digest, so the query reaches PostgreSQL and reads the
/// still-live row while its answer is held; the key is revoked on A
/// meanwhile. Proves: the answer that arrives after the stall is not
/// "allowed" (nothing B says about the key later than the bound is), and B
/// recovers (SERVING, REVOKED) by itself once the network does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stalled_past_the_bound_is_not_answered_allowed() {
    stalled_read(bound() + Duration::from_secs(1)).await;
}

/// As above, with a stall three times the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stalled_three_times_the_bound_is_not_answered_allowed() {
    stalled_read(bound() * 3).await;
}

/// The same stall under CheckScope by credential, CheckScope by key id and
/// ext_authz Check: every path that answers from a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_read_is_not_answered_allowed_through_check_scope_by_credential() {
    stalled_read_through(
        bound() + Duration::from_secs(1),
        Path::CheckScopeByCredential,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_read_is_not_answered_allowed_through_check_scope_by_key_id() {
    stalled_read_through(bound() + Duration::from_secs(1), Path::CheckScopeById).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_read_is_not_answered_allowed_through_ext_authz_check() {
    stalled_read_through(bound() + Duration::from_secs(1), Path::ExtAuthzCheck).await;
}

/// The hot-path RPC a stalled request goes through.
#[derive(Debug, Clone, Copy)]
enum Path {
    Authenticate,
    CheckScopeByCredential,
    CheckScopeById,
    ExtAuthzCheck,
}

/// Both replicas: any key may call `GET /orders` through Check.
fn config_with_a_route() -> Config {
    crate::helpers::envoy::config_from(
        r#"
        [[http.routes]]
        methods = ["GET"]
        path = "/orders"
        scopes = []
        "#,
    )
}

/// Whether B allowed `secret` (key `key_id`) through `path`.
async fn allowed_through(b: Channel, path: Path, secret: &str, key_id: &str) -> bool {
    let mut keys = KeyServiceClient::new(b.clone());
    let check_scope = |key_id: &str, credential: &str| proto::CheckScopeRequest {
        key_id: key_id.into(),
        credential: credential.into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    };
    match path {
        Path::Authenticate => try_authenticate(&keys, secret).await.unwrap().allowed,
        Path::CheckScopeByCredential => {
            keys.check_scope(check_scope("", secret))
                .await
                .unwrap()
                .into_inner()
                .allowed
        }
        Path::CheckScopeById => {
            keys.check_scope(check_scope(key_id, ""))
                .await
                .unwrap()
                .into_inner()
                .allowed
        }
        Path::ExtAuthzCheck => {
            let request = crate::helpers::envoy::get("/orders").bearer(secret).build();
            let response = crate::helpers::envoy::Envoy::on(b).check(request).await;
            response.status.is_some_and(|status| status.code == 0)
        }
    }
}

async fn stalled_read(stall: Duration) {
    stalled_read_through(stall, Path::Authenticate).await;
}

async fn stalled_read_through(stall: Duration, path: Path) {
    let config = match path {
        Path::ExtAuthzCheck => config_with_a_route,
        _ => test_config,
    };
    let Some(ProxiedPair { mut a, b, proxy }) = proxied_pair_with(config).await else {
        return;
    };
    let ledger = Ledger::new();
    let (key, secret) = a.create_key("acct_1", &["orders:read"]).await;
    let (_, live_secret) = a.create_key("acct_1", &[]).await;
    // B is current, and its pool has a connection open (the read below
    // needs no new one).
    assert!(b.authenticate(&live_secret).await.allowed);
    assert_eq!(b.status().await, ServingStatus::Serving);

    // The read to hold: by digest, or (CheckScope by key id) by the id.
    match path {
        Path::CheckScopeById => proxy.hold_all_once_sent(key.id.as_bytes()),
        _ => proxy.hold_all_once_sent(&sha2::Sha256::digest(secret.as_bytes())),
    }
    let in_flight = tokio::spawn({
        let (channel, secret, id) = (b.channel.clone(), secret.clone(), key.id.clone());
        async move {
            let sent = Instant::now();
            let allowed = allowed_through(channel, path, &secret, &id).await;
            (allowed, sent, Instant::now())
        }
    });
    assert!(
        eventually(Duration::from_secs(10), async || proxy.holding()
            == Hold::All)
        .await,
        "B never asked PostgreSQL for the key's row"
    );
    assert!(
        eventually(Duration::from_secs(10), async || proxy.held_bytes() > 0).await,
        "the reply to B's read never reached the proxy"
    );
    let revoked = ledger.revoke(&mut a, 0, "acct_1", &key.id).await;
    // Every answer about the key from here on counts too.
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let sampler = load(
        &ledger,
        &b,
        &[(0, secret.clone())],
        1,
        Duration::from_millis(20),
        &stop,
    );

    // The fault's duration.
    tokio::time::sleep_until(revoked + stall).await;
    proxy.release();
    let (allowed, sent, received) = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .expect("B answers the stalled request once released")
        .unwrap();
    ledger.assert_none_late();
    assert!(
        !allowed,
        "{path:?}: the stalled request, sent {} and answered {} after RevokeKey returned, was allowed",
        since(revoked, sent),
        since(revoked, received)
    );

    assert!(
        b.becomes(ServingStatus::Serving, Duration::from_secs(20))
            .await,
        "B did not return to SERVING after the stall"
    );
    assert!(
        eventually(Duration::from_secs(20), async || ledger
            .ask(&b.keys, 0, &secret)
            .await
            .reason
            == Reason::Revoked)
        .await,
        "B does not answer REVOKED after the stall"
    );
    assert!(
        eventually(Duration::from_secs(20), async || ledger
            .after_deadline(0)
            .len()
            >= AFTER_DEADLINE)
        .await
    );
    finish(&stop, sampler).await;
    ledger.assert_promise();
    assert!(b.authenticate(&live_secret).await.allowed);
    revocations_reach_b_again(&mut a, &b, "acct_2").await;
    drop(proxy);
    a.shutdown().await;
    b.shutdown().await;
}

/// Fault: only B's listener connection (the one that sent `LISTEN`) is
/// stalled, so the NOTIFY for a revocation is held at the proxy. Proves: B
/// still stops allowing the key within the bound (its poll goes through
/// other connections), stays current (answers after the deadline are
/// REVOKED, not UNAVAILABLE; a live key stays allowed; health SERVING), and
/// the late NOTIFY does no harm once delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_only_the_listener_still_denies_within_the_bound() {
    let Some(ProxiedPair { mut a, b, proxy }) = proxied_pair().await else {
        return;
    };
    let ledger = Ledger::new();
    let (key, secret) = a.create_key("acct_1", &[]).await;
    let (_, live_secret) = a.create_key("acct_1", &[]).await;
    assert!(b.authenticate(&secret).await.allowed);
    assert!(b.authenticate(&live_secret).await.allowed);

    proxy.hold(Hold::Listener);
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let sampler = load(
        &ledger,
        &b,
        &[(0, secret.clone()), (1, live_secret.clone())],
        2,
        Duration::from_millis(10),
        &stop,
    );
    let revoked = ledger.revoke(&mut a, 0, "acct_1", &key.id).await;
    assert!(
        eventually(Duration::from_secs(5), async || proxy.held_bytes() > 0).await,
        "the revocation's NOTIFY never reached the proxy"
    );
    assert!(
        eventually(Duration::from_secs(10), async || {
            Instant::now() > revoked + bound() + Duration::from_secs(1)
                && ledger.after_deadline(0).len() >= AFTER_DEADLINE
        })
        .await
    );
    assert_eq!(b.status().await, ServingStatus::Serving);
    assert!(proxy.held_bytes() > 0, "the listener is still held");
    finish(&stop, sampler).await;

    ledger.assert_promise();
    for answer in ledger.after_deadline(0) {
        assert_eq!(answer.reason, Reason::Revoked, "{answer:?}");
    }
    let live: Vec<Answer> = ledger
        .answers()
        .into_iter()
        .filter(|a| a.key == 1)
        .collect();
    assert!(!live.is_empty());
    for answer in live {
        assert!(answer.allowed, "a live key was refused: {answer:?}");
    }

    proxy.release();
    assert!(eventually(Duration::from_secs(5), async || proxy.held_bytes() == 0).await);
    revocations_reach_b_again(&mut a, &b, "acct_2").await;
    drop(proxy);
    a.shutdown().await;
    b.shutdown().await;
}

/// How a stall of everything ends.
#[derive(Debug, Clone, Copy)]
enum StallEnds {
    /// The network recovers: held replies are delivered.
    Released,
    /// The connections are closed: held replies are lost, B must reconnect.
    Cut,
}

/// Fault: every reply to B (pool, follower, listener, and new connections)
/// stalls; a key B has cached is revoked on A meanwhile. Proves: B goes
/// NOT_SERVING, answers UNAVAILABLE for cache hits and misses alike once it
/// cannot prove it is current, never allows the revoked key past the
/// bound, and when the network recovers it returns to SERVING and answers
/// correctly, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_everything_fails_closed_and_recovers_on_release() {
    holding_everything(StallEnds::Released).await;
}

/// As above, but the stall ends with B's connections cut (closed), so B
/// must reconnect everything to recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_everything_fails_closed_and_recovers_after_a_cut() {
    holding_everything(StallEnds::Cut).await;
}

async fn holding_everything(ends: StallEnds) {
    let Some(ProxiedPair { mut a, b, proxy }) = proxied_pair().await else {
        return;
    };
    let ledger = Ledger::new();
    let (key, secret) = a.create_key("acct_1", &[]).await;
    let (_, live_secret) = a.create_key("acct_1", &[]).await;
    let (_, uncached_secret) = a.create_key("acct_1", &[]).await;
    assert!(b.authenticate(&secret).await.allowed);
    assert!(b.authenticate(&live_secret).await.allowed);

    proxy.hold(Hold::All);
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let sampler = load(
        &ledger,
        &b,
        &[(0, secret.clone()), (1, live_secret.clone())],
        2,
        Duration::from_millis(10),
        &stop,
    );
    let revoked = ledger.revoke(&mut a, 0, "acct_1", &key.id).await;

    assert!(
        b.becomes(ServingStatus::NotServing, Duration::from_secs(15))
            .await,
        "B stayed SERVING with every reply stalled"
    );
    let stale_seen = Instant::now();
    // Stale: cache hits and misses alike are UNAVAILABLE.
    for _ in 0..3 {
        for (key, secret) in [(0, &secret), (1, &live_secret), (2, &uncached_secret)] {
            let answer = ledger.ask(&b.keys, key, secret).await;
            assert_eq!(answer.reason, Reason::Unavailable, "{answer:?}");
        }
    }
    assert!(
        eventually(Duration::from_secs(10), async || {
            Instant::now() > revoked + bound() + Duration::from_secs(1)
                && ledger.after_deadline(0).len() >= AFTER_DEADLINE
        })
        .await
    );
    assert_eq!(
        b.status().await,
        ServingStatus::NotServing,
        "B claimed to be current while every reply was stalled"
    );
    let stall_ended = Instant::now();
    match ends {
        StallEnds::Released => proxy.release(),
        StallEnds::Cut => {
            proxy.cut();
            proxy.release();
        }
    }

    let while_stale: Vec<Answer> = ledger
        .answers()
        .into_iter()
        .filter(|a| a.sent >= stale_seen && a.received <= stall_ended)
        .collect();
    assert!(while_stale.len() >= AFTER_DEADLINE, "{}", while_stale.len());
    for answer in &while_stale {
        assert_eq!(
            answer.reason,
            Reason::Unavailable,
            "while stale: {answer:?}"
        );
    }

    assert!(
        b.becomes(ServingStatus::Serving, Duration::from_secs(20))
            .await,
        "B did not return to SERVING after the stall ({ends:?})"
    );
    assert!(
        eventually(Duration::from_secs(20), async || {
            ledger.ask(&b.keys, 0, &secret).await.reason == Reason::Revoked
                && ledger.ask(&b.keys, 1, &live_secret).await.allowed
                && ledger.ask(&b.keys, 2, &uncached_secret).await.allowed
        })
        .await,
        "B does not answer correctly after the stall ({ends:?})"
    );
    finish(&stop, sampler).await;
    ledger.assert_promise();
    revocations_reach_b_again(&mut a, &b, "acct_2").await;
    drop(proxy);
    a.shutdown().await;
    b.shutdown().await;
}

/// The `application_name` of replica B's sessions here, so the test can
/// kill B's and only B's.
const REPLICA_B: &str = "keyward_faults_b";

/// B's sessions in the test's database (pool, follower, listener).
async fn replica_b_backends(admin: &mut sqlx::PgConnection) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE application_name LIKE $1 AND datname = current_database()",
    )
    .bind(format!("{REPLICA_B}%"))
    .fetch_all(admin)
    .await
    .unwrap()
}

/// Fault: every session of B's (pool, follower, listener) is killed with
/// `pg_terminate_backend` every 150 ms while four tasks call Authenticate
/// on B in a loop over eight keys and A revokes six of them, one every
/// 300 ms. Proves: no revoked key is allowed past the bound in any answer,
/// and once the killing stops B is SERVING and answers correctly again,
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_b_sessions_under_load_never_lets_a_revoked_key_through() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let b = Replica::start(
        with_application_name(&database.url, REPLICA_B),
        test_config(),
    )
    .await;
    let ledger = Ledger::new();
    let mut keys = Vec::new();
    for i in 0..8 {
        let account = format!("acct_{}", i % 4);
        let (key, secret) = a.create_key(&account, &[]).await;
        assert!(b.authenticate(&secret).await.allowed);
        keys.push((account, key.id, secret));
    }
    let secrets: Vec<(usize, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, _, secret))| (i, secret.clone()))
        .collect();

    let stop_load = CancellationToken::new();
    let _stop_on_exit = stop_load.clone().drop_guard();
    let load_tasks = load(
        &ledger,
        &b,
        &secrets,
        4,
        Duration::from_millis(10),
        &stop_load,
    );
    let stop_killing = CancellationToken::new();
    let _stop_killing_on_exit = stop_killing.clone().drop_guard();
    let killer = tokio::spawn({
        let stop = stop_killing.clone();
        let url = database.url.clone();
        async move {
            let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut killed = 0;
            while !stop.is_cancelled() {
                for pid in replica_b_backends(&mut admin).await {
                    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .fetch_one(&mut admin)
                        .await
                        .unwrap();
                    killed += usize::from(terminated);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            killed
        }
    });

    let mut last_revoked = Instant::now();
    for (i, (account, id, _)) in keys.iter().enumerate().take(6) {
        // Pacing: revocations spread over the faults.
        tokio::time::sleep(Duration::from_millis(300)).await;
        last_revoked = ledger.revoke(&mut a, i, account, id).await;
    }
    assert!(
        eventually(Duration::from_secs(20), async || {
            Instant::now() > last_revoked + bound() + Duration::from_secs(1)
                && (0..6).all(|i| ledger.after_deadline(i).len() >= AFTER_DEADLINE)
        })
        .await,
        "too few answers after the deadlines"
    );
    stop_killing.cancel();
    let killed = killer.await.unwrap();
    assert!(killed > 0, "the test killed none of B's sessions");

    assert!(
        b.becomes(ServingStatus::Serving, Duration::from_secs(20))
            .await,
        "B did not return to SERVING once the killing stopped"
    );
    assert!(
        eventually(Duration::from_secs(20), async || {
            let mut correct = true;
            for (i, (_, _, secret)) in keys.iter().enumerate() {
                let answer = ledger.ask(&b.keys, i, secret).await;
                correct &= if i < 6 {
                    answer.reason == Reason::Revoked
                } else {
                    answer.allowed
                };
            }
            correct
        })
        .await,
        "B does not answer correctly once the killing stopped"
    );
    finish(&stop_load, load_tasks).await;
    ledger.assert_promise();
    revocations_reach_b_again(&mut a, &b, "acct_9").await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Fault: the database (a throwaway cluster) is stopped as a crash would
/// stop it, just after A revoked a key, and started again a while later,
/// while four tasks call Authenticate on B in a loop. Proves: B goes
/// NOT_SERVING and answers UNAVAILABLE (cached live keys included) while
/// the database is down, never allows the revoked key past the bound, and
/// recovers by itself when the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_under_load_fails_closed_and_recovers() {
    let cluster = match tokio::task::spawn_blocking(ThrowawayCluster::start)
        .await
        .unwrap()
    {
        Ok(cluster) => Arc::new(cluster),
        Err(reason) => {
            if crate::helpers::running_in_ci() {
                panic!("CI=true but no throwaway PostgreSQL: {reason}");
            }
            report_skip(&format!(
                "a_restarted_database_under_load_fails_closed_and_recovers: {reason}"
            ));
            return;
        }
    };
    let database = Arc::new(TestDatabase::create_postgres(&cluster.admin_url()).await);
    let mut a = spawn_on(database.clone(), test_config()).await;
    let b = Replica::start(database.url.clone(), test_config()).await;
    let ledger = Ledger::new();
    let mut keys = Vec::new();
    for i in 0..6 {
        let account = format!("acct_{}", i % 3);
        let (key, secret) = a.create_key(&account, &[]).await;
        assert!(b.authenticate(&secret).await.allowed);
        keys.push((account, key.id, secret));
    }
    let secrets: Vec<(usize, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, _, secret))| (i, secret.clone()))
        .collect();
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let load_tasks = load(&ledger, &b, &secrets, 4, Duration::from_millis(10), &stop);

    let revoked = ledger.revoke(&mut a, 0, &keys[0].0, &keys[0].1).await;
    // The throwaway cluster commits asynchronously (synchronous_commit=off,
    // for speed), so a crash right after RevokeKey could take the
    // revocation back (seen: B then found the log rewound, and the key
    // live again). A checkpoint writes it out first, as a synchronous
    // commit would have.
    let mut admin = sqlx::PgConnection::connect(&cluster.admin_url())
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&mut admin).await.unwrap();
    admin.close().await.ok();
    tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        move || cluster.stop()
    })
    .await
    .unwrap();

    assert!(
        b.becomes(ServingStatus::NotServing, Duration::from_secs(15))
            .await,
        "B stayed SERVING without its database"
    );
    let stale_seen = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), async || {
            Instant::now() > (revoked + bound()).max(stale_seen) + Duration::from_secs(1)
                && ledger.after_deadline(0).len() >= AFTER_DEADLINE
        })
        .await
    );
    assert_eq!(b.status().await, ServingStatus::NotServing);
    let restarting = Instant::now();
    tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        move || cluster.start_again()
    })
    .await
    .unwrap()
    .expect("restart PostgreSQL");

    let while_down: Vec<Answer> = ledger
        .answers()
        .into_iter()
        .filter(|a| a.sent >= stale_seen && a.received <= restarting)
        .collect();
    assert!(while_down.len() >= AFTER_DEADLINE, "{}", while_down.len());
    for answer in &while_down {
        assert_eq!(
            answer.reason,
            Reason::Unavailable,
            "database down: {answer:?}"
        );
    }

    assert!(
        b.becomes(ServingStatus::Serving, Duration::from_secs(30))
            .await,
        "B did not return to SERVING after the database came back"
    );
    assert!(
        eventually(Duration::from_secs(20), async || {
            let mut correct = true;
            for (i, (_, _, secret)) in keys.iter().enumerate() {
                let answer = ledger.ask(&b.keys, i, secret).await;
                correct &= if i == 0 {
                    answer.reason == Reason::Revoked
                } else {
                    answer.allowed
                };
            }
            correct
        })
        .await,
        "B does not answer correctly after the database came back"
    );
    finish(&stop, load_tasks).await;
    ledger.assert_promise();
    assert!(
        eventually(Duration::from_secs(20), async || health_of(&a).await
            == ServingStatus::Serving)
        .await,
        "A did not return to SERVING"
    );
    revocations_reach_b_again(&mut a, &b, "acct_9").await;
    a.shutdown().await;
    b.shutdown().await;
}
