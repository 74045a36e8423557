//! Serving: health (overall and per service, following the replica's
//! freshness), reflection (v1 and v1alpha), the real binary's startup
//! errors, its `--help` (no secrets from the environment) and its graceful
//! shutdown on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Db, TestDatabase, connect, eventually, spawn_app, spawn_on, test_config};
use crate::on_both_databases;

/// The whole server, and each service by its full name.
const HEALTH_NAMES: [&str; 3] = [
    "",
    "keyward.v1.KeyService",
    "envoy.service.auth.v3.Authorization",
];

on_both_databases!(
    health_reports_serving_overall_and_per_service,
    reflection_lists_services_in_v1_and_v1alpha
);

async fn health_reports_serving_overall_and_per_service(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    for service in HEALTH_NAMES {
        let status = app
            .health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = app
        .health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.shutdown().await;
}

async fn reflection_lists_services_in_v1_and_v1alpha(db: Db) {
    use tokio_stream::StreamExt;
    let Some(app) = spawn_app(db).await else {
        return;
    };

    let mut v1 = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        app.channel.clone(),
    );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut replies = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = reply.message_response
    else {
        panic!("unexpected reflection reply");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"keyward.v1.KeyService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let mut v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            app.channel.clone(),
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "keyward.v1.KeyService".into(),
            ),
        ),
    };
    let mut replies = v1alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    assert!(matches!(
        reply.message_response,
        Some(tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
    app.shutdown().await;
}

/// A replica that cannot prove it is current reports every service
/// NOT_SERVING, not only the server as a whole, and SERVING again once it
/// has caught up (a throwaway PostgreSQL cluster, stopped and restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_goes_not_serving_when_the_replica_fails_closed() {
    use crate::helpers::postgres::ThrowawayCluster;
    let Some(cluster) = ThrowawayCluster::start_or_skip(
        "every_service_goes_not_serving_when_the_replica_fails_closed",
    ) else {
        return;
    };
    let database = std::sync::Arc::new(TestDatabase::create_postgres(&cluster.admin_url()).await);
    let mut app = spawn_on(database, test_config()).await;
    let statuses = async |app: &mut crate::helpers::TestApp| {
        let mut statuses = Vec::new();
        for service in HEALTH_NAMES {
            let status = app
                .health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status());
            statuses.push(status.ok());
        }
        statuses
    };
    assert_eq!(statuses(&mut app).await, [Some(ServingStatus::Serving); 3]);
    // Crash at once, while startup's connections are still new: the
    // replica must recover from that too (it once stayed failing closed).
    cluster.stop();

    let all_down = eventually(Duration::from_secs(10), async || {
        statuses(&mut app).await == [Some(ServingStatus::NotServing); 3]
    })
    .await;
    assert!(all_down, "{:?}", statuses(&mut app).await);

    cluster.start_again().expect("restart PostgreSQL");
    let all_up = eventually(Duration::from_secs(20), async || {
        statuses(&mut app).await == [Some(ServingStatus::Serving); 3]
    })
    .await;
    assert!(all_up, "{:?}", statuses(&mut app).await);
    app.shutdown().await;
}

fn keyward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
}

/// Runs the binary to completion and returns (success, stderr).
fn run_to_end(command: &mut Command) -> (bool, String) {
    let output = command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run keyward");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_config_file_stops_startup_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[cache]\ncapacity = 0\n",
            "`cache.capacity`",
            "must be between",
        ),
        (
            "[cache]\ncapacity = \"lots\"\n",
            "`cache.capacity`",
            "invalid type",
        ),
        (
            "[keys]\nprefix = \"c c\"\n",
            "`keys.prefix`",
            "ASCII letters",
        ),
        ("[keys]\nalphabet = \"emoji\"\n", "`keys.alphabet`", "hex"),
        (
            "[feed]\nfreshness_bound_ms = 60\npoll_interval_ms = 50\n",
            "`feed.freshness_bound_ms`",
            "poll_interval",
        ),
        (
            "[bans]\nban_seconds = -1\n",
            "`bans.ban_seconds`",
            "between",
        ),
        (
            "[[scopes]]\nname = \"a\"\nimplies = [\"b\"]\n",
            "`scopes[0].implies`",
            "not in the catalog",
        ),
        (
            "[denials.invalid]\nhttp_status = 200\n",
            "`denials.invalid.http_status`",
            "not allowed",
        ),
        (
            "[server]\nlisten = \"nowhere\"\n",
            "`server.listen`",
            "not an address",
        ),
        (
            "[server]\ndatabase_url = \"mysql://x\"\n",
            "`server.database_url`",
            "unsupported",
        ),
        (
            "[cache]\ncapasity = 5\n",
            "`cache.capasity`",
            "unknown field",
        ),
        ("this is not toml", "`(syntax)`", "expected"),
    ];
    for (text, key, reason) in cases {
        let path = dir.path().join("profile.toml");
        std::fs::write(&path, text).unwrap();
        let database = dir.path().join("k.db");
        let (ok, stderr) = run_to_end(
            keyward()
                .args(["serve", "--config"])
                .arg(&path)
                .env(
                    "KEYWARD_DATABASE_URL",
                    format!("sqlite://{}", database.display()),
                )
                .current_dir(dir.path()),
        );
        assert!(!ok, "{text:?} should fail");
        assert!(!database.exists(), "{text:?}: nothing is written");
        assert!(
            stderr.contains(&path.display().to_string()),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(key), "names {key}: {stderr}");
        assert!(stderr.contains(reason), "says {reason}: {stderr}");
        let (ok, check_stderr) = run_to_end(keyward().arg("check-config").arg(&path));
        assert!(
            !ok && check_stderr.contains(key),
            "check-config agrees: {check_stderr}"
        );
    }
    let (ok, stderr) = run_to_end(keyward().args(["serve", "--config", "/no/such/file.toml"]));
    assert!(
        !ok && stderr.contains("/no/such/file.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_stop_startup_with_a_clear_message() {
    let (ok, stderr) = run_to_end(keyward().args(["serve", "--listen", "not-an-address"]));
    assert!(!ok && stderr.contains("--listen"), "{stderr}");
    let (ok, stderr) =
        run_to_end(keyward().args(["serve", "--database-url", "mysql://localhost/x"]));
    assert!(
        !ok && stderr.contains("--database-url") && stderr.contains("unsupported"),
        "{stderr}"
    );
    let (ok, stderr) = run_to_end(keyward().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        "sqlite:///no/such/dir/k.db",
    ]));
    assert!(
        !ok && stderr
            .contains("--database-url sqlite:///no/such/dir/k.db: cannot open the database"),
        "{stderr}"
    );
    let (ok, stderr) = run_to_end(
        keyward()
            .args(["serve"])
            .env("KEYWARD_LISTEN", "also-not-an-address"),
    );
    assert!(
        !ok && stderr.contains("--listen"),
        "environment values are checked too: {stderr}"
    );
}

/// `--help` names the environment variables it reads but never shows their
/// values: a database URL may hold a password, and a token is one.
#[test]
fn help_does_not_print_secrets_from_the_environment() {
    for (args, variable, value) in [
        (
            &["serve", "--help"][..],
            "KEYWARD_DATABASE_URL",
            "postgres://kw:s3cret-db-password@db/kw",
        ),
        (
            &["keys", "list", "--help"][..],
            "KEYWARD_TOKEN",
            "kwt_s3cret-token",
        ),
    ] {
        let output = keyward()
            .args(args)
            .env(variable, value)
            .stdin(Stdio::null())
            .output()
            .expect("run keyward");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {help}");
        assert!(help.contains(variable), "{args:?} names {variable}: {help}");
        assert!(!help.contains("s3cret"), "{args:?}: {help}");
    }
}

/// SIGTERM drains and stops cleanly, and a last use recorded just before it
/// (with the periodic flush an hour away) reaches the database.
#[tokio::test]
async fn the_binary_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, "[last_used]\nflush_interval_seconds = 3600\n").unwrap();
    let database = dir.path().join("k.db");
    let port = crate::helpers::free_port("127.0.0.1");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&profile)
        .env(
            "KEYWARD_DATABASE_URL",
            format!("sqlite://{}", database.display()),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut connected = None;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            connected = Some(connect(addr).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = connected.expect("binary listens");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut keys = keyward::proto::key_service_client::KeyServiceClient::new(channel);
    let status = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    let created = keys
        .create_key(keyward::proto::CreateKeyRequest {
            account_id: "acct_1".into(),
            name: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let used = keys
        .authenticate(keyward::proto::AuthenticateRequest {
            credential: created.secret,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(used.allowed);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    let stored_last_use = async || -> Option<i64> {
        sqlx::query_scalar("SELECT last_used_at FROM api_keys")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    // The first periodic flush is an hour away: only SIGTERM can write it.
    assert_eq!(stored_last_use().await, None, "written before SIGTERM");

    let pid = child.id().unwrap();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        stored_last_use().await.is_some(),
        "the last use before SIGTERM was flushed"
    );
}

/// A session of the test's own that holds `account`'s row lock (the one
/// CreateKey takes to count the account's keys), until it commits.
async fn hold_account_lock(database: &TestDatabase, account: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(account)
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// Whether one of keyward's sessions on the test database is waiting for a
/// lock (a CreateKey blocked behind `hold_account_lock`).
async fn keyward_waits_for_a_lock(database: &TestDatabase) -> bool {
    use sqlx::Connection;
    let mut observer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let waiting: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = $1 AND wait_event_type = 'Lock')",
    )
    .bind(keyward::storage::postgres::APPLICATION_NAME)
    .fetch_one(&mut observer)
    .await
    .unwrap();
    observer.close().await.ok();
    waiting
}

/// `keyward serve` (the binary, as operators run it) with
/// `shutdown_grace_seconds = grace` on the test's PostgreSQL database, one
/// key created in acct_1, and a second CreateKey for acct_1 in flight: held
/// in the database behind the test's lock on the account, visibly waiting
/// for it. (The binary, because a call the server stops waiting for ends
/// when the process exits.)
struct InFlight {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    database: std::sync::Arc<TestDatabase>,
    holder: sqlx::PgConnection,
    call: tokio::task::JoinHandle<Result<keyward::proto::CreateKeyResponse, tonic::Status>>,
    _dir: tempfile::TempDir,
}

async fn a_create_in_flight(grace_seconds: u64) -> Option<InFlight> {
    use keyward::proto;
    let database = TestDatabase::create(Db::Postgres).await?;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.toml");
    std::fs::write(
        &profile,
        format!("[server]\nshutdown_grace_seconds = {grace_seconds}\n"),
    )
    .unwrap();
    let port = crate::helpers::free_port("127.0.0.1");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", &addr.to_string()])
        .arg("--config")
        .arg(&profile)
        .env("KEYWARD_DATABASE_URL", &database.url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await,
        "the binary listens"
    );
    let mut keys = keyward::proto::key_service_client::KeyServiceClient::new(connect(addr).await);
    let create = |name: &str| proto::CreateKeyRequest {
        account_id: "acct_1".into(),
        name: name.into(),
        ..Default::default()
    };
    keys.create_key(create("before")).await.expect("CreateKey");
    let holder = hold_account_lock(&database, "acct_1").await;
    let call = tokio::spawn(async move {
        keys.create_key(create("in flight"))
            .await
            .map(tonic::Response::into_inner)
    });
    assert!(
        eventually(Duration::from_secs(30), async || {
            keyward_waits_for_a_lock(&database).await
        })
        .await,
        "the CreateKey reaches the database and waits for the account"
    );
    Some(InFlight {
        child,
        addr,
        database,
        holder,
        call,
        _dir: dir,
    })
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running");
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

async fn stored_key_names(database: &TestDatabase) -> Vec<String> {
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let names = sqlx::query_scalar("SELECT name FROM api_keys ORDER BY created_at, name")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    names
}

/// `server.shutdown_grace_seconds` is how long a server told to stop
/// (SIGTERM) waits for calls in flight: one that ends within it (its lock is
/// released after the server has stopped accepting connections) finishes
/// and answers, its key is written, and the server then exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_lets_an_in_flight_call_finish() {
    use sqlx::Connection;
    let Some(InFlight {
        mut child,
        addr,
        database,
        mut holder,
        call,
        _dir,
    }) = a_create_in_flight(60).await
    else {
        return;
    };
    sigterm(&child);
    assert!(
        eventually(Duration::from_secs(30), async || {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the stopping server still accepts connections"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with a call in flight"
    );

    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();

    let answered = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends")
        .unwrap()
        .expect("the call in flight finishes and answers");
    assert_eq!(answered.key.unwrap().name, "in flight");
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits once the call is done")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(stored_key_names(&database).await, ["before", "in flight"]);
}

/// A call still in flight when `server.shutdown_grace_seconds` is over is
/// cut: the server exits no sooner than the grace and without waiting for
/// the call (whose database statement is still waiting for its lock when
/// the caller's connection is cut), and nothing of it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_cuts_a_call_that_outlasts_it() {
    use sqlx::Connection;
    let grace = Duration::from_secs(2);
    let Some(InFlight {
        mut child,
        database,
        mut holder,
        call,
        _dir,
        ..
    }) = a_create_in_flight(grace.as_secs()).await
    else {
        return;
    };
    let stop_asked = tokio::time::Instant::now();
    sigterm(&child);
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits after its grace")
        .unwrap();
    let exited_after = stop_asked.elapsed();
    let cut = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends")
        .unwrap()
        .expect_err("the call was cut");
    let still_waiting = keyward_waits_for_a_lock(&database).await;

    assert!(exit.success(), "{exit:?}");
    assert!(
        exited_after >= grace,
        "exited {exited_after:?} after SIGTERM, before its {grace:?} grace"
    );
    assert!(
        still_waiting,
        "the call's statement had finished: it was not cut ({cut:?})"
    );
    assert!(
        cut.metadata().get("x-request-id").is_none(),
        "answered by the server, not cut: {cut:?}"
    );

    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    // The abandoned session rolls back once it has its lock: it is gone, and
    // left nothing.
    assert!(
        eventually(Duration::from_secs(30), async || {
            !keyward_waits_for_a_lock(&database).await
        })
        .await
    );
    assert_eq!(stored_key_names(&database).await, ["before"]);
}
