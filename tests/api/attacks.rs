//! keyward tried as an attacker would: each test reproduces one way the
//! fail-closed promise or the hot path could be turned against the people
//! keyward protects, and checks the outcome an attacker gets now.
//!
//! - a stalled database read answering with a revoked key's old row;
//! - strangers banning a user, taking every watch slot, reading other
//!   tenants' events or probing their keys;
//! - a flood of new addresses pushing a live ban out of its table;
//! - bytes that do not decode;
//! - look-alike and invisible characters in ids and names;
//! - keys in forms keyward does not read, passed to an upstream.
//!
//! (JWT lifetimes and JWT callers confined to their account are in
//! `management_auth.rs`, beside the other JWT tests.)

use keyward::audit::Actor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keyward::access_control::token_sha256_hex;
use keyward::authenticator::{Presented, PresentedKey, Required};
use keyward::change_feed::Freshness;
use keyward::config::Config;
use keyward::domain::{AccountId, KeyName, UnixMillis};
use keyward::key_cache::KeyCache;
use keyward::key_management::CreateKey;
use keyward::proto::{self, denial::Reason};
use keyward::storage::{self, KeyStore, PoolSettings};
use keyward::telemetry::Surface;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use crate::helpers::envoy::{Envoy, allowed, denied, get, profile};
use crate::helpers::store_decorator::{Decorated, StoreHooks, in_process};
use crate::helpers::{
    Db, TestDatabase, assert_invalid_argument, eventually, reason, spawn_app_with, stored_key_rows,
    test_config,
};

// ---------------------------------------------------------------------------
// 1. A stalled read: the answer must rest on a read that began within the
//    freshness bound of the answer, and reads are cut off at the bound.
// ---------------------------------------------------------------------------

/// Holds key reads after the row has been read, while `armed`, until
/// released: a database or network that stalls mid-read.
#[derive(Default)]
struct StallingReads {
    armed: AtomicBool,
    held: Notify,
    release: Notify,
}

#[async_trait]
impl StoreHooks for StallingReads {
    async fn after_key_read(&self) {
        if self.armed.swap(false, Ordering::AcqRel) {
            self.held.notify_one();
            self.release.notified().await;
        }
    }
}

/// A replica's hot path over a stalling store, with its freshness proof,
/// and a plain store standing for another replica.
struct StalledReplica {
    replica: crate::helpers::store_decorator::InProcess,
    hooks: Arc<Decorated<StallingReads>>,
    other_replica: Arc<dyn KeyStore>,
    freshness: Arc<Freshness>,
    _database: Arc<TestDatabase>,
}

const BOUND: Duration = Duration::from_millis(500);

async fn stalled_replica(db: Db) -> Option<StalledReplica> {
    let database = TestDatabase::create(db).await?;
    let store = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let other_replica = storage::open(&database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    let hooks = Decorated::new(store, StallingReads::default());
    let freshness = Arc::new(Freshness::new(BOUND));
    freshness.confirm(Instant::now());
    let cache = Arc::new(KeyCache::new(&Config::default().cache));
    let replica = in_process(
        Arc::clone(&hooks) as Arc<dyn KeyStore>,
        cache,
        Arc::clone(&freshness),
    );
    Some(StalledReplica {
        replica,
        hooks,
        other_replica,
        freshness,
        _database: database,
    })
}

fn new_key(account: &AccountId) -> CreateKey {
    CreateKey {
        account_id: account.clone(),
        name: KeyName::parse("stalled").unwrap(),
        scopes: vec!["orders:read".into()],
        preset: None,
        expires_at: None,
        rate_limit: None,
        quota: None,
        metadata: Default::default(),
        allowed_networks: Vec::new(),
    }
}

fn authenticate_request(secret: &str) -> Presented<'_> {
    Presented {
        surface: Surface::Authenticate,
        min_revision: 0,
        key: PresentedKey::Credential(secret),
        required: Required::Scopes(&[]),
        client: None,
        account: None,
    }
}

/// The issue's reproduction, in one process: a cache miss reads the key's
/// row, the reply stalls (here for the bound and a bit more); meanwhile
/// another replica revokes the key, and this replica's feed, stalled too,
/// has not applied it. Before the fix the held row answered "allowed" after
/// the stall; now an answer resting on a read older than the bound is
/// UNAVAILABLE.
async fn a_read_that_returns_after_the_bound_is_not_an_answer(db: Db) {
    let Some(setup) = stalled_replica(db).await else {
        return;
    };
    let account = AccountId::parse("acct_stall").unwrap();
    let (written, secret) = setup
        .replica
        .manager
        .create(new_key(&account), &Actor::in_process())
        .await
        .unwrap();
    let secret = secret.into_exposed();
    let record = written.record;

    setup.hooks.hooks.armed.store(true, Ordering::Release);
    let authenticator = &setup.replica.authenticator;
    let answer = authenticator.authenticate(authenticate_request(&secret));
    let revoke_meanwhile = async {
        setup.hooks.hooks.held.notified().await;
        setup
            .other_replica
            .revoke_key(
                &account,
                &record.id,
                UnixMillis::now(),
                &Actor::in_process(),
            )
            .await
            .unwrap();
        // The stall itself: the held reply is delivered after the bound.
        tokio::time::sleep(BOUND + Duration::from_millis(300)).await;
        setup.hooks.hooks.release.notify_one();
    };
    let (verdict, ()) = tokio::join!(answer, revoke_meanwhile);
    assert!(
        !verdict.allowed(),
        "a row read before the revocation answered after the bound"
    );
    assert_eq!(
        verdict.denial().map(|d| d.reason),
        Some(keyward::denial::Reason::Unavailable)
    );
    // Nothing stale was cached either: the next call reads again and sees
    // the revocation.
    setup.freshness.confirm(Instant::now());
    let next = authenticator
        .authenticate(authenticate_request(&secret))
        .await;
    assert_eq!(
        next.denial().map(|d| d.reason),
        Some(keyward::denial::Reason::Revoked)
    );
}

/// A read that never returns is given up at the bound (the feed meanwhile
/// keeps proving the replica current, so only the timeout can end it).
async fn a_read_that_never_returns_fails_closed_at_the_bound(db: Db) {
    let Some(setup) = stalled_replica(db).await else {
        return;
    };
    let account = AccountId::parse("acct_hang").unwrap();
    let (_, secret) = setup
        .replica
        .manager
        .create(new_key(&account), &Actor::in_process())
        .await
        .unwrap();
    let secret = secret.into_exposed();
    let freshness = Arc::clone(&setup.freshness);
    let feed = tokio::spawn(async move {
        loop {
            freshness.confirm(Instant::now());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    setup.hooks.hooks.armed.store(true, Ordering::Release);
    let started = Instant::now();
    let verdict = tokio::time::timeout(
        Duration::from_secs(30),
        setup
            .replica
            .authenticator
            .authenticate(authenticate_request(&secret)),
    )
    .await
    .expect("a stalled read must not hang the answer");
    feed.abort();
    assert_eq!(
        verdict.denial().map(|d| d.reason),
        Some(keyward::denial::Reason::Unavailable)
    );
    assert!(started.elapsed() >= BOUND, "gave up only at the bound");
    setup.hooks.hooks.release.notify_one();
}

crate::on_both_databases!(
    a_read_that_returns_after_the_bound_is_not_an_answer,
    a_read_that_never_returns_fails_closed_at_the_bound,
);

// ---------------------------------------------------------------------------
// 2. The hot path and strangers.
// ---------------------------------------------------------------------------

const BACKEND_TOKEN: &str = "kwt_attacks_backend";
const STRANGER_TOKEN: &str = "kwt_attacks_stranger";
const WATCHER_A: &str = "kwt_attacks_watcher_a";
const WATCHER_B: &str = "kwt_attacks_watcher_b";
const DASHBOARD_TOKEN: &str = "kwt_attacks_dashboard";

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn auth_config(auth: &str) -> Config {
    let mut config = test_config();
    config.auth = Config::parse(auth, "attacks.toml").unwrap().auth;
    config
}

fn authenticate(credential: &str, client_ip: &str) -> proto::AuthenticateRequest {
    proto::AuthenticateRequest {
        credential: credential.into(),
        required_scopes: vec![],
        client_ip: client_ip.into(),
        ..Default::default()
    }
}

/// A bogus key of the right shape (it reaches the ban accounting).
fn bogus_key() -> String {
    format!("cc_{}", "0".repeat(64))
}

/// Ten calls naming a victim's address with a bogus key used to ban the
/// victim. Only a token trusted with client addresses may name one now;
/// anyone else's failures count against its own connection's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_get_a_user_banned() {
    let mut config = auth_config(&format!(
        r#"
[[auth.service_tokens]]
name = "backend"
sha256 = "{}"
rpcs = ["Authenticate"]
trust_client_ip = true

[[auth.service_tokens]]
name = "stranger"
sha256 = "{}"
rpcs = ["Authenticate"]
"#,
        token_sha256_hex(BACKEND_TOKEN),
        token_sha256_hex(STRANGER_TOKEN),
    ));
    config.bans.max_failures = 3;
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let (_, secret) = app.create_key("acct_victim", &["orders:read"]).await;
    let victim = "198.51.100.23";

    // A stranger with a token of its own names the victim's address.
    for _ in 0..3 {
        let response = app
            .keys
            .authenticate(with_token(
                authenticate(&bogus_key(), victim),
                STRANGER_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reason(&response), Reason::UnknownKey);
    }

    // The victim, through the trusted backend, is not banned.
    let served = app
        .keys
        .authenticate(with_token(authenticate(&secret, victim), BACKEND_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(served.allowed, "the victim was banned: {served:?}");

    // The stranger's failures counted against its own address (127.0.0.1),
    // whatever client_ip it named: it is banned, and so is anyone else
    // untrusted on that address (an anonymous caller, whose client_ip is
    // not believed either).
    let stranger = app
        .keys
        .authenticate(with_token(authenticate(&secret, victim), STRANGER_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&stranger), Reason::TooManyFailedAttempts);
    let anonymous = app
        .keys
        .authenticate(authenticate(&secret, victim))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&anonymous), Reason::TooManyFailedAttempts);

    // The trusted backend's own failures count against the address it names.
    for _ in 0..3 {
        app.keys
            .authenticate(with_token(
                authenticate(&bogus_key(), "203.0.113.9"),
                BACKEND_TOKEN,
            ))
            .await
            .unwrap();
    }
    let banned = app
        .keys
        .authenticate(with_token(
            authenticate(&secret, "203.0.113.9"),
            BACKEND_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reason(&banned), Reason::TooManyFailedAttempts);
    app.shutdown().await;
}

/// Envoy's client address counts only from a trusted caller too: a Check
/// from an untrusted token naming a victim's address bans the caller, not
/// the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_get_a_user_banned_through_check() {
    let mut config = profile("carboncopy");
    config.auth = Config::parse(
        &format!(
            r#"
[[auth.service_tokens]]
name = "envoy"
sha256 = "{}"
rpcs = ["Check"]
trust_client_ip = true

[[auth.service_tokens]]
name = "stranger"
sha256 = "{}"
rpcs = ["Check"]
"#,
            token_sha256_hex(BACKEND_TOKEN),
            token_sha256_hex(STRANGER_TOKEN),
        ),
        "attacks.toml",
    )
    .unwrap()
    .auth;
    config.bans.max_failures = 3;
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let (_, secret) = app.create_key("acct_victim", &["portfolio:read"]).await;
    let victim = "198.51.100.24";
    let mut stranger = Envoy::with_token(app.channel.clone(), STRANGER_TOKEN);
    for _ in 0..3 {
        let response = stranger
            .check(
                get("/api/v1/portfolio")
                    .bearer(&bogus_key())
                    .sent_by_peer(victim)
                    .build(),
            )
            .await;
        assert_eq!(denied(&response).status, 401);
    }
    let mut envoy = Envoy::with_token(app.channel.clone(), BACKEND_TOKEN);
    let response = envoy
        .check(
            get("/api/v1/portfolio")
                .bearer(&secret)
                .sent_by_peer(victim)
                .build(),
        )
        .await;
    allowed(&response);
    app.shutdown().await;
}

/// With management locked, a stranger without a token gets nothing from
/// the hot path: no events to read, no keys to probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_management_is_locked_strangers_get_nothing_from_the_hot_path() {
    let config = auth_config(&format!(
        r#"
[[auth.service_tokens]]
name = "dashboard"
sha256 = "{}"
rpcs = ["CreateKey"]

[[auth.service_tokens]]
name = "backend"
sha256 = "{}"
rpcs = ["Authenticate", "CheckScope", "WatchRevocations"]
"#,
        token_sha256_hex(DASHBOARD_TOKEN),
        token_sha256_hex(BACKEND_TOKEN),
    ));
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let key = app
        .keys
        .create_key(with_token(
            proto::CreateKeyRequest {
                account_id: "acct_tenant".into(),
                name: "tenant key".into(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            DASHBOARD_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let watch = app
        .keys
        .watch_revocations(proto::WatchRevocationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::Unauthenticated, "{watch:?}");
    let probe = app
        .keys
        .check_scope(proto::CheckScopeRequest {
            key_id: key.id.clone(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(probe.code(), Code::Unauthenticated, "{probe:?}");
    let wrong = app
        .keys
        .check_scope(with_token(
            proto::CheckScopeRequest {
                key_id: key.id.clone(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            "kwt_not_a_token",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    // The backend's token opens them.
    let checked = app
        .keys
        .check_scope(with_token(
            proto::CheckScopeRequest {
                key_id: key.id,
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            BACKEND_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(checked.allowed);
    app.shutdown().await;
}

/// 1024 idle streams from one caller used to take every place; now a
/// caller has its own share, and others still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_cannot_take_every_watch_slot() {
    let mut config = auth_config(&format!(
        r#"
[auth]
hot_path_requires_token = true

[[auth.service_tokens]]
name = "watcher-a"
sha256 = "{}"
rpcs = ["WatchRevocations"]

[[auth.service_tokens]]
name = "watcher-b"
sha256 = "{}"
rpcs = ["WatchRevocations"]
"#,
        token_sha256_hex(WATCHER_A),
        token_sha256_hex(WATCHER_B),
    ));
    config.feed.max_watchers = 3;
    config.feed.max_watchers_per_caller = 2;
    let app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let watch = |token: &'static str| {
        let mut keys = app.keys.clone();
        async move {
            keys.watch_revocations(with_token(proto::WatchRevocationsRequest::default(), token))
                .await
        }
    };
    let first = watch(WATCHER_A).await.expect("a's first stream");
    let _second = watch(WATCHER_A).await.expect("a's second stream");
    let third = watch(WATCHER_A).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(
        third
            .message()
            .contains("service token \"watcher-a\" already has 2"),
        "{third:?}"
    );
    let _b = watch(WATCHER_B).await.expect("b still gets in");
    let replica_full = watch(WATCHER_B).await.unwrap_err();
    assert_eq!(replica_full.code(), Code::ResourceExhausted);
    assert!(
        replica_full.message().contains("already serves 3"),
        "{replica_full:?}"
    );
    // Closing a stream gives its place back.
    drop(first);
    assert!(
        eventually(Duration::from_secs(10), async || watch(WATCHER_A)
            .await
            .is_ok())
        .await,
        "a's place came back"
    );
    app.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. A flood of new addresses never frees a live ban.
// ---------------------------------------------------------------------------

async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: keyward\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The issue's attack: ban yourself, then get 5,000 other addresses banned
/// (more than the table holds) to push your own ban out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_addresses_never_unbans_an_attacker() {
    let mut config = test_config();
    config.bans.max_failures = 1;
    config.bans.max_tracked_addresses = 1_000;
    config.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let (_, secret) = app.create_key("acct_attacker", &["orders:read"]).await;
    let attacker = "203.0.113.66";
    app.keys
        .authenticate(authenticate(&bogus_key(), attacker))
        .await
        .unwrap();

    for chunk in (0..5_000u32).collect::<Vec<_>>().chunks(200) {
        futures_util::future::join_all(chunk.iter().map(|&i| {
            let mut keys = app.keys.clone();
            let address = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            async move {
                keys.authenticate(authenticate(&bogus_key(), &address))
                    .await
                    .unwrap();
            }
        }))
        .await;
    }

    let response = app
        .keys
        .authenticate(authenticate(&secret, attacker))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reason(&response),
        Reason::TooManyFailedAttempts,
        "the flood freed the attacker's ban"
    );
    let metrics = scrape(app.metrics_addr().unwrap()).await;
    assert!(
        metrics.contains("keyward_ban_table_full{table=\"bans\"} 1"),
        "a full table shows in metrics:\n{metrics}"
    );
    assert!(
        metrics.contains("keyward_ban_table_refusals_total{table="),
        "{metrics}"
    );
    app.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Bytes that do not decode.
// ---------------------------------------------------------------------------

/// Sends raw bytes as a gRPC request and returns the raw reply.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

async fn raw_call(
    channel: &Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// `message` encoded, with the bytes of `marker` (in a string field)
/// replaced by as many bytes that are not UTF-8.
fn with_invalid_utf8(message: &impl Message, marker: &str) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|window| window == marker.as_bytes())
        .expect("the marker is in the encoding");
    bytes[at..at + marker.len()].fill(0xff);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_argument_and_write_nothing() {
    let mut app = spawn_app_with(Db::Sqlite, test_config()).await.unwrap();
    let channel = app.channel.clone();

    let credential = with_invalid_utf8(&authenticate("cc_MARKER", ""), "MARKER");
    let status = raw_call(&channel, "/keyward.v1.KeyService/Authenticate", credential)
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "credential");

    let create = proto::CreateKeyRequest {
        account_id: "acct_utf8".into(),
        name: "NAME_MARKER".into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    };
    let status = raw_call(
        &channel,
        "/keyward.v1.KeyService/CreateKey",
        with_invalid_utf8(&create, "NAME_MARKER"),
    )
    .await
    .unwrap_err();
    assert_invalid_argument(&status, "name");

    let account = proto::CreateKeyRequest {
        account_id: "ACCOUNT_MARKER".into(),
        ..create.clone()
    };
    let status = raw_call(
        &channel,
        "/keyward.v1.KeyService/CreateKey",
        with_invalid_utf8(&account, "ACCOUNT_MARKER"),
    )
    .await
    .unwrap_err();
    assert_invalid_argument(&status, "account_id");

    for (garbage, field) in [
        (vec![0x0f], "request"),
        (vec![0xff; 16], "request"),
        // Field 1 (account_id) whose length never ends.
        (vec![0x0a, 0x80], "account_id"),
    ] {
        let status = raw_call(&channel, "/keyward.v1.KeyService/CreateKey", garbage)
            .await
            .unwrap_err();
        assert_invalid_argument(&status, field);
    }
    assert!(stored_key_rows(&app).await.is_empty(), "nothing written");

    // The server is still there, and still right.
    let (_, secret) = app.create_key("acct_utf8", &["orders:read"]).await;
    assert!(app.authenticate(&secret, &["orders:read"]).await.allowed);
    app.shutdown().await;
}

/// An ext_authz Check that does not decode is a denied CheckResponse with
/// the product's 400 body, never a gRPC error (which an Envoy with
/// `failure_mode_allow: true` would let through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_check_is_denied_with_the_products_400() {
    let app = spawn_app_with(Db::Sqlite, profile("csboard"))
        .await
        .unwrap();
    let channel = app.channel.clone();
    let bad_path = with_invalid_utf8(&get("/v1/PATH_MARKER").build(), "PATH_MARKER");
    let bad_header = with_invalid_utf8(
        &get("/v1/listings")
            .header("x-note", "HEADER_MARKER")
            .build(),
        "HEADER_MARKER",
    );
    for bytes in [bad_path, bad_header, vec![0xff; 8]] {
        let reply = raw_call(
            &channel,
            "/envoy.service.auth.v3.Authorization/Check",
            bytes,
        )
        .await
        .expect("a CheckResponse, not an error");
        let response = envoy_types::ext_authz::v3::pb::CheckResponse::decode(&reply[..]).unwrap();
        let refusal = denied(&response);
        assert_eq!(refusal.status, 400);
        assert_eq!(
            refusal.body,
            serde_json::json!({"code": "bad_request", "detail": "The request could not be read."})
        );
    }
    app.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. Look-alike and invisible characters.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_accounts_and_disguised_names_are_refused() {
    let mut app = spawn_app_with(Db::Sqlite, test_config()).await.unwrap();
    let create = |account: &str, name: &str| proto::CreateKeyRequest {
        account_id: account.into(),
        name: name.into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    };
    let status = app
        .keys
        .create_key(create("\u{430}cct_\u{ff21}\u{200b}\u{202e}", "fine"))
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "account_id");
    assert!(status.message().contains("printable ASCII"), "{status:?}");
    let status = app
        .keys
        .create_key(create("acct_ok", "safe\u{202e}gnp.exe"))
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "name");
    assert!(status.message().contains("U+202E"), "{status:?}");
    // The same rules on every RPC that names an account.
    let status = app
        .keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct\u{200b}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "account_id");
    assert!(stored_key_rows(&app).await.is_empty(), "nothing written");
    app.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Keys in forms keyward does not read never reach the upstream.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_unrecognised_forms_are_stripped_before_the_upstream() {
    let mut app = spawn_app_with(Db::Sqlite, profile("carboncopy"))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_leak", &["portfolio:read"]).await;
    let mut envoy = Envoy::of(&app);

    // A public route (key management is public in the profile).
    let response = envoy
        .check(
            get(&format!("/api/v1/keys?API_KEY={secret}&page=1"))
                .header("authorization", &format!("Token {secret}"))
                .header("x-copied-key", &secret)
                .build(),
        )
        .await;
    let ok = allowed(&response);
    for header in ["authorization", "x-copied-key"] {
        assert!(
            ok.headers_to_remove.iter().any(|h| h == header),
            "{header} not stripped: {:?}",
            ok.headers_to_remove
        );
    }
    assert_eq!(ok.query_parameters_to_remove, ["API_KEY"]);

    // An API route: the key used is stripped, and so is a second copy.
    let response = envoy
        .check(
            get(&format!("/api/v1/portfolio?token={secret}"))
                .bearer(&secret)
                .build(),
        )
        .await;
    let ok = allowed(&response);
    assert!(ok.headers_to_remove.iter().any(|h| h == "authorization"));
    assert_eq!(ok.query_parameters_to_remove, ["token"]);
    app.shutdown().await;
}

/// CSBoard reads `api_key`; `API_KEY` is the same parameter to keyward,
/// read and removed under the spelling the request used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_query_parameter_is_matched_in_any_case() {
    let mut app = spawn_app_with(Db::Sqlite, profile("csboard"))
        .await
        .unwrap();
    let (_, secret) = app.create_key("acct_case", &[]).await;
    let mut envoy = Envoy::of(&app);
    let response = envoy
        .check(get(&format!("/v1/listings?API_KEY={secret}")).build())
        .await;
    let ok = allowed(&response);
    assert_eq!(ok.query_parameters_to_remove, ["API_KEY"]);
    let twice = envoy
        .check(get(&format!("/v1/listings?api_key={secret}&Api_Key={secret}")).build())
        .await;
    assert_eq!(denied(&twice).status, 400, "two spellings are ambiguous");
    app.shutdown().await;
}
