//! Running the real binary as an operator would: the secure default for
//! management without credentials (loopback only, or an explicit flag), JSON
//! logs with one line per denial and request ids, `check-config`, and the
//! layering of file, environment and flags.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keyward::access_control::token_sha256_hex;
use keyward::proto;
use keyward::proto::key_service_client::KeyServiceClient;
use tokio::io::AsyncReadExt;

use crate::helpers::{connect, free_port};

const DASHBOARD_TOKEN: &str = "kwt_operations_dashboard_token";

/// A `keyward serve` child process with stderr captured.
struct ServeProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl ServeProcess {
    /// `keyward serve --listen IP:PORT ARGS...` on a fresh port, logging at
    /// debug level.
    async fn start(listen_ip: &str, args: &[&str], database_dir: &Path) -> Self {
        Self::start_logging(listen_ip, args, database_dir, "keyward=debug").await
    }

    /// The same with `RUST_LOG` set to `log_filter`.
    async fn start_logging(
        listen_ip: &str,
        args: &[&str],
        database_dir: &Path,
        log_filter: &str,
    ) -> Self {
        let port = free_port(listen_ip);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--listen", &format!("{listen_ip}:{port}")])
            .args(args)
            .env(
                "KEYWARD_DATABASE_URL",
                format!("sqlite://{}", database_dir.join("k.db").display()),
            )
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut listening = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                listening = true;
                break;
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("keyward serve exited: {exit:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(listening, "keyward serve did not start listening");
        Self { child, addr }
    }

    /// SIGTERM, wait, and return everything it logged.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap();
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert!(exit.success(), "{exit:?}: {stderr}");
        stderr
    }
}

#[test]
fn open_management_on_a_public_address_needs_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env(
            "KEYWARD_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("k.db").display()),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("only be served on a loopback address, not 0.0.0.0:0")
            && stderr.contains("--insecure-open-management"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("k.db").exists(),
        "refusing to start writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_management_is_served_on_loopback_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start("127.0.0.1", &[], dir.path()).await;
    let mut keys = KeyServiceClient::new(connect(server.addr).await);
    keys.create_key(proto::CreateKeyRequest {
        account_id: "acct_local".into(),
        name: "local".into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    })
    .await
    .expect("open management on loopback");
    let stderr = server.stop().await;
    assert!(
        stderr.contains("management RPCs are open to local callers only"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insecure_flag_or_configured_credentials_allow_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    // Open management off loopback still leaves the hot path locked, and
    // with no token to open it the server refuses to start.
    let port = free_port("0.0.0.0");
    let refused = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .arg("--insecure-open-management")
        .env(
            "KEYWARD_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("refused.db").display()),
        )
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("need a service token here")
            && stderr.contains("0.0.0.0")
            && stderr.contains("--insecure-open-hot-path"),
        "{stderr}"
    );
    assert!(!dir.path().join("refused.db").exists(), "nothing created");

    let flagged = ServeProcess::start(
        "0.0.0.0",
        &["--insecure-open-management", "--insecure-open-hot-path"],
        dir.path(),
    )
    .await;
    let mut keys = KeyServiceClient::new(connect(flagged.addr).await);
    keys.list_keys(proto::ListKeysRequest {
        account_id: "acct".into(),
        ..Default::default()
    })
    .await
    .expect("open management, as asked");
    keys.authenticate(proto::AuthenticateRequest {
        credential: "cc_nope".into(),
        ..Default::default()
    })
    .await
    .expect("an open hot path, as asked");
    let stderr = flagged.stop().await;
    assert!(
        stderr.contains("open to anyone who can reach this address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("INSECURE: Authenticate, CheckScope, WatchRevocations and Check are open"),
        "{stderr}"
    );

    let config = dir.path().join("locked.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.service_tokens]]\nname = \"dashboard\"\nsha256 = \"{}\"\nrpcs = [\"ListKeys\"]\n\n[[auth.service_tokens]]\nname = \"envoy\"\nsha256 = \"{}\"\nrpcs = [\"Check\"]\n",
            token_sha256_hex(DASHBOARD_TOKEN),
            token_sha256_hex("kwt_envoy_public_address")
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let locked = ServeProcess::start("0.0.0.0", &["--config", &config_arg], dir.path()).await;
    let mut keys = KeyServiceClient::new(connect(locked.addr).await);
    let refused = keys
        .list_keys(proto::ListKeysRequest {
            account_id: "acct".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    keys.list_keys(with_metadata(
        proto::ListKeysRequest {
            account_id: "acct".into(),
            ..Default::default()
        },
        &[("authorization", &format!("Bearer {DASHBOARD_TOKEN}"))],
    ))
    .await
    .expect("the configured token opens ListKeys");
    locked.stop().await;
}

fn with_metadata<T>(message: T, pairs: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (name, value) in pairs {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    request
}

/// At the default level a request id is made where a log line can carry
/// it (management RPCs, logged at info) and not for the hot path or health,
/// whose spans are at debug; a caller's own id is echoed on every RPC. (At
/// debug level the hot path gets a made one too: the test below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_made_only_where_a_log_line_can_carry_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start_logging("127.0.0.1", &[], dir.path(), "info").await;
    let channel = connect(server.addr).await;
    let mut keys = KeyServiceClient::new(channel.clone());
    let created = keys
        .create_key(proto::CreateKeyRequest {
            account_id: "acct_ids".into(),
            name: "ids".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(request_id_of(&created).starts_with("kw-"));
    let secret = created.into_inner().secret;
    let authenticate = || proto::AuthenticateRequest {
        credential: secret.clone(),
        ..Default::default()
    };

    let quiet = keys.authenticate(authenticate()).await.unwrap();
    assert!(quiet.get_ref().allowed);
    assert!(quiet.metadata().get("x-request-id").is_none());
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert!(health.metadata().get("x-request-id").is_none());

    let given = keys
        .authenticate(with_metadata(
            authenticate(),
            &[("x-request-id", "req-hot-1")],
        ))
        .await
        .unwrap();
    assert_eq!(request_id_of(&given), "req-hot-1");
    server.stop().await;
}

fn request_id_of<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("x-request-id")
        .expect("x-request-id echoed")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_one_line_per_denial_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("profile.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nhot_path_requires_token = false\n\n[[auth.service_tokens]]\nname = \"dashboard\"\nsha256 = \"{}\"\nrpcs = [\"CreateKey\", \"ListKeys\"]\n",
            token_sha256_hex(DASHBOARD_TOKEN)
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let server = ServeProcess::start(
        "127.0.0.1",
        &["--log-format", "json", "--config", &config_arg],
        dir.path(),
    )
    .await;
    let mut keys = KeyServiceClient::new(connect(server.addr).await);
    let bearer = format!("Bearer {DASHBOARD_TOKEN}");

    let created = keys
        .create_key(with_metadata(
            proto::CreateKeyRequest {
                account_id: "acct_logs".into(),
                name: "logged".into(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            &[("authorization", &bearer), ("x-request-id", "req-create-1")],
        ))
        .await
        .unwrap();
    assert_eq!(request_id_of(&created), "req-create-1");
    let created = created.into_inner();
    let key_id = created.key.unwrap().id;
    let secret = created.secret;

    let unknown_key = format!("cc_{}", "cd".repeat(32));
    let authenticate = |credential: &str, scope: &str| proto::AuthenticateRequest {
        credential: credential.into(),
        required_scopes: vec![scope.into()],
        client_ip: String::new(),
        ..Default::default()
    };
    let denied = keys
        .authenticate(with_metadata(
            authenticate(&unknown_key, "orders:read"),
            &[("x-request-id", "req-deny-1")],
        ))
        .await
        .unwrap();
    assert_eq!(request_id_of(&denied), "req-deny-1");
    assert!(!denied.into_inner().allowed);
    let scope_denied = keys
        .authenticate(with_metadata(
            authenticate(&secret, "orders:write"),
            &[("x-request-id", "req-deny-2")],
        ))
        .await
        .unwrap();
    assert!(!scope_denied.into_inner().allowed);
    let wrong_token = "kwt_this_token_is_wrong_and_must_not_be_logged";
    let refused = keys
        .create_key(with_metadata(
            proto::CreateKeyRequest::default(),
            &[
                ("authorization", &format!("Bearer {wrong_token}")),
                ("x-request-id", "req-refused-1"),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        refused.metadata().get("x-request-id").unwrap(),
        "req-refused-1"
    );
    let generated = keys
        .authenticate(authenticate(&secret, "orders:read"))
        .await
        .unwrap();
    assert!(request_id_of(&generated).starts_with("kw-"));

    let stderr = server.stop().await;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let find = |message: &str, request_id: &str| {
        lines
            .iter()
            .find(|line| line["message"] == message && line["span"]["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no {message:?} line for {request_id}:\n{stderr}"))
    };
    let unknown = find("denied", "req-deny-1");
    assert_eq!(unknown["reason"], "unknown_key");
    assert_eq!(unknown["level"], "DEBUG");
    let scope = find("denied", "req-deny-2");
    assert_eq!(scope["reason"], "insufficient_scope");
    assert_eq!(scope["key_id"], key_id.as_str());
    assert_eq!(scope["span"]["rpc"], "Authenticate");
    assert_eq!(
        find("key created", "req-create-1")["key_id"],
        key_id.as_str()
    );
    let refusal = find("refused", "req-refused-1");
    assert_eq!(refusal["span"]["rpc"], "CreateKey");
    assert_eq!(
        lines
            .iter()
            .filter(|line| line["message"] == "denied")
            .count(),
        2,
        "one line per denied request"
    );
    for secret_text in [&secret, &unknown_key, wrong_token, DASHBOARD_TOKEN] {
        assert!(
            !stderr.contains(secret_text),
            "a secret reached the logs: {secret_text}"
        );
    }
}

#[test]
fn check_config_prints_what_a_profile_means() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key_file = dir.path().join("privy.pem");
    std::fs::write(&key_file, key.public_key_pem()).unwrap();
    let profile = dir.path().join("journal.toml");
    std::fs::write(
        &profile,
        format!(
            r#"
[keys]
prefix = "tj_"
body_length = 40
alphabet = "base62"
max_active_per_account = 3

[[scopes]]
name = "journal:read"
description = "Read entries"

[[scopes]]
name = "journal:write"
implies = ["journal:read"]

[[scopes]]
name = "profile"
auto_grant = true

[[scopes]]
name = "export"
reserved = true
denial_code = "export_not_enabled"
denial_message = "Exports are not enabled."

[[presets]]
name = "everything"
scopes = ["journal:*", "export"]

[rate_limit]
requests = 100
per_seconds = 60

[bans]
enabled = false

[server]
metrics_listen = "127.0.0.1:9464"

[[auth.service_tokens]]
name = "auditor"
sha256 = "{hash}"
rpcs = ["ListKeys", "GetKey"]

[auth.jwt]
issuers = ["privy.io"]
audiences = ["app-123"]
public_key_files = ["{key}"]
subject_claim = "account"

[http]
key_header = "x-api-key"
error_style = "error_object_with_details"
trusted_proxy_hops = 2
unmatched_route = "public"
strip_credential = false

[http.identity_headers]
account_id = "x-user-id"

[[http.routes]]
methods = ["GET", "HEAD"]
path = "/api/journal..."
scopes = ["journal:read"]

[[http.routes]]
methods = ["*"]
path = "/api/me"
scopes = []
"#,
            hash = token_sha256_hex("t"),
            key = key_file.display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("check-config")
        .arg(&profile)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    for expected in [
        &format!("{}: ok", profile.display()),
        "tj_<40 base62 characters>",
        "journal:write  [implies journal:read]",
        "profile  [granted to every key]",
        "export  [reserved: grantable, not used yet; denied as export_not_enabled: \"Exports are not enabled.\"]",
        "everything: journal:read, journal:write, export",
        "at most 3 active keys per account",
        "rotation grace period: at most 7days",
        "default rate limit: 100 requests per 60 s per key",
        "Failed-authentication bans:\n  off",
        "service token \"auditor\": GetKey, ListKeys",
        "user JWTs: CreateKey, RevokeKey, GetKey, ListKeys, UpdateKey, RotateKey, ImportKeys, ListKeyEvents for the account in claim `account`; iss privy.io; aud app-123",
        "hot-path RPCs (Authenticate, CheckScope, WatchRevocations, Check): service token required (management needs credentials); but no service token lists a hot-path RPC, so `serve` refuses to start",
        "metrics: http://127.0.0.1:9464/metrics",
        "keys read from: authorization header (Bearer, ApiKey), then header `x-api-key` (the first present wins)",
        "credential removed before the request goes upstream: no",
        "client address: x-forwarded-for entry 3 from the right, after the peer Envoy appends (trusted_proxy_hops = 2, as Envoy's xff_num_trusted_hops)",
        "error bodies: error_object_with_details",
        "identity headers: key id x-keyward-key-id, account id x-user-id, scopes x-keyward-scopes",
        "routes (the first match wins):\n    [0] GET, HEAD /api/journal...: key with journal:read\n    [1] * /api/me: any valid key\n",
        "unmatched_route = public: other requests pass without a key",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains(&token_sha256_hex("t")),
        "hashes are not printed"
    );
}

/// Where each layer points the gRPC port, the metrics port and the
/// database. The test holds both ports bound until the layer is the one
/// meant to win, so a server that picked a losing layer's address cannot
/// start (and no other test can take the ports meanwhile).
struct Layer {
    listen: SocketAddr,
    metrics: SocketAddr,
    database: std::path::PathBuf,
    held: Vec<std::net::TcpListener>,
}

impl Layer {
    fn new(dir: &Path, name: &str) -> Self {
        let held: Vec<_> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        Self {
            listen: held[0].local_addr().unwrap(),
            metrics: held[1].local_addr().unwrap(),
            database: dir.join(format!("{name}.db")),
            held,
        }
    }

    /// Frees the ports for the server about to be started.
    fn release(&mut self) {
        self.held.clear();
    }

    /// Holds the ports again once that server has exited. A port taken in
    /// the meantime stays unheld: that round then checks a little less.
    fn hold_again(&mut self) {
        self.held = [self.listen, self.metrics]
            .into_iter()
            .filter_map(|addr| std::net::TcpListener::bind(addr).ok())
            .collect();
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.database.display())
    }
}

async fn listening(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// Defaults < file < environment < flags, for the real binary: each layer
/// names its own gRPC address, metrics address and database, and only the
/// highest layer present is used. (The file comes in through
/// `KEYWARD_CONFIG` once, and through `--config` otherwise.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_beats_the_file_and_flags_beat_the_environment() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut file = Layer::new(dir.path(), "file");
    let mut env = Layer::new(dir.path(), "env");
    let mut flag = Layer::new(dir.path(), "flag");
    let profile = dir.path().join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "[server]\nlisten = \"{}\"\nmetrics_listen = \"{}\"\ndatabase_url = \"{}\"\n",
            file.listen,
            file.metrics,
            file.database_url()
        ),
    )
    .unwrap();

    for highest in ["file", "env", "flag"] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .arg("serve")
            .env_remove("KEYWARD_LISTEN")
            .env_remove("KEYWARD_METRICS_LISTEN")
            .env_remove("KEYWARD_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if highest == "file" {
            command.env("KEYWARD_CONFIG", &profile);
        } else {
            command
                .env_remove("KEYWARD_CONFIG")
                .arg("--config")
                .arg(&profile);
            command
                .env("KEYWARD_LISTEN", env.listen.to_string())
                .env("KEYWARD_METRICS_LISTEN", env.metrics.to_string())
                .env("KEYWARD_DATABASE_URL", env.database_url());
        }
        if highest == "flag" {
            command
                .args(["--listen", &flag.listen.to_string()])
                .args(["--metrics-listen", &flag.metrics.to_string()])
                .args(["--database-url", &flag.database_url()]);
        }
        // Layers are tried in rising order, so the losers' ports stay held.
        let (winner, losers) = match highest {
            "file" => (&mut file, [&env, &flag]),
            "env" => (&mut env, [&file, &flag]),
            _ => (&mut flag, [&file, &env]),
        };
        winner.release();
        let mut child = command.spawn().unwrap();

        let mut up = false;
        for _ in 0..400 {
            if listening(winner.listen).await && listening(winner.metrics).await {
                up = true;
                break;
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("{highest}: keyward serve exited: {exit:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            up,
            "{highest}: not listening on {} and {}",
            winner.listen, winner.metrics
        );

        let mut keys = KeyServiceClient::new(connect(winner.listen).await);
        keys.create_key(proto::CreateKeyRequest {
            account_id: "acct_layers".into(),
            name: highest.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{highest}: {e}"));
        let mut scrape = tokio::net::TcpStream::connect(winner.metrics)
            .await
            .unwrap();
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: keyward\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        scrape.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{highest}: {response}"
        );
        for loser in losers {
            assert!(
                !loser.database.exists(),
                "{highest}: opened {}",
                loser.database.display()
            );
        }
        assert!(winner.database.exists(), "{highest}: its database is used");

        let pid = child.id().unwrap();
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert!(exit.success(), "{highest}: {exit:?}");
        winner.hold_again();
        // The next round looks for databases afresh.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains(".db") {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
}
