//! TLS and mutual TLS on the gRPC port, with a CA, server and client
//! certificates generated for each test: handshakes with and without a
//! client certificate, plaintext refused, bad files refused at startup
//! naming the flag, and the operator CLI over mutual TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keyward::config::Config;
use keyward::proto;
use keyward::proto::key_service_client::KeyServiceClient;
use keyward::server::{self, RunningServer};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::test_config;

/// Certificate files for one test.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate from a CA the server does not trust.
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = certificate_authority("keyward test CA");
    let (server_cert, server_key) = leaf(
        &ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(&ca, &["dashboard"], ExtendedKeyUsagePurpose::ClientAuth);
    let stranger_ca = certificate_authority("someone else's CA");
    let (stranger_cert, stranger_key) = leaf(
        &stranger_ca,
        &["dashboard"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
        stranger_cert: write("stranger.pem", &stranger_cert),
        stranger_key: write("stranger.key", &stranger_key),
        dir,
    }
}

fn tls_config(pki: &Pki, mutual: bool) -> Config {
    let mut config = test_config();
    config.server.tls_cert = Some(pki.server_cert.clone());
    config.server.tls_key = Some(pki.server_key.clone());
    if mutual {
        config.server.tls_client_ca = Some(pki.ca.clone());
    }
    config
}

async fn start(
    mut config: Config,
    database_dir: &Path,
) -> Result<RunningServer, server::ServeError> {
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.database_url = format!("sqlite://{}", database_dir.join("keyward.db").display())
        .parse()
        .unwrap();
    server::start(config).await
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Connects over TLS trusting the test CA, with a client identity if given,
/// and makes one call (ListScopes); the error is the handshake's or the call's.
async fn list_scopes_over_tls(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<proto::ListScopesResponse, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    KeyServiceClient::new(channel)
        .list_scopes(proto::ListScopesRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("call: {status:?}"))
}

/// What a TLS port answers a client that starts HTTP/2 in plaintext: the
/// bytes it sends back before it closes the connection.
async fn plaintext_http2_preface_answer(addr: SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection")
    .ok();
    answer
}

/// Asserts a failed TLS call failed for `reason` (text from rustls's error
/// in the client's error chain).
#[track_caller]
fn assert_refused_for<T: std::fmt::Debug>(result: &Result<T, String>, reason: &str, what: &str) {
    match result {
        Ok(answer) => panic!("{what}: should be refused, got {answer:?}"),
        Err(error) => assert!(
            error.contains(reason),
            "{what}: should fail with {reason}, failed with {error}"
        ),
    }
}

/// Asserts that a call is refused by the server during the TLS handshake
/// with the fatal alert `alert`. Every attempt must fail at the transport
/// (no gRPC answer comes back); the alert itself reaches the client's error
/// only when it arrives before the client gives up on the connection (with
/// TLS 1.3 the client has sent its request by then), so the call is
/// repeated, up to 30 times, until one error names it.
async fn refused_by_the_server_for<T: std::fmt::Debug>(
    mut call: impl AsyncFnMut() -> Result<T, String>,
    alert: &str,
    what: &str,
) {
    let wanted = format!("received fatal alert: {alert}");
    let mut errors = Vec::new();
    for _ in 0..30 {
        let error = match call().await {
            Ok(answer) => panic!("{what}: should be refused, got {answer:?}"),
            Err(error) => error,
        };
        assert!(
            error.contains("tonic::transport::Error(Transport"),
            "{what}: should fail at the transport, failed with {error}"
        );
        if error.contains(&wanted) {
            return;
        }
        errors.push(error);
    }
    panic!("{what}: no attempt was refused with {wanted}: {errors:#?}");
}

async fn list_scopes_in_plaintext(addr: SocketAddr) -> Result<(), String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    KeyServiceClient::new(channel)
        .list_scopes(proto::ListScopesRequest {})
        .await
        .map(|_| ())
        .map_err(|status| format!("call: {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_the_ca_and_refuses_plaintext() {
    let pki = pki();
    let server = start(tls_config(&pki, false), pki.dir.path())
        .await
        .expect("starts with TLS");
    let scopes = list_scopes_over_tls(server.addr(), &pki.ca, None)
        .await
        .expect("a client trusting the CA gets through");
    assert_eq!(scopes.key_prefix, "cc_");
    assert!(
        list_scopes_in_plaintext(server.addr()).await.is_err(),
        "plaintext must not be served on a TLS port"
    );
    // The server's whole answer to plaintext HTTP/2 is one fatal TLS alert
    // record (content type 21, TLS 1.x, two bytes: level 2 = fatal): it
    // speaks TLS only, and no HTTP/2 frame comes back.
    let answer = plaintext_http2_preface_answer(server.addr()).await;
    assert!(
        matches!(answer.as_slice(), [21, 3, _, 0, 2, 2, _]),
        "a TLS port answers plaintext with a fatal TLS alert only: {answer:?}"
    );
    let stranger_ca = pki.dir.path().join("stranger-ca.pem");
    std::fs::write(&stranger_ca, certificate_authority("other").pem()).unwrap();
    assert_refused_for(
        &list_scopes_over_tls(server.addr(), &stranger_ca, None).await,
        "InvalidCertificate(UnknownIssuer)",
        "a client must not trust a server its CA did not sign",
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_signed_by_the_client_ca() {
    let pki = pki();
    let server = start(tls_config(&pki, true), pki.dir.path())
        .await
        .expect("starts with mutual TLS");
    list_scopes_over_tls(
        server.addr(),
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .await
    .expect("a client certificate from the CA gets through");
    // The server's own refusals: TLS alerts naming the reason.
    refused_by_the_server_for(
        async || list_scopes_over_tls(server.addr(), &pki.ca, None).await,
        "CertificateRequired",
        "no client certificate",
    )
    .await;
    refused_by_the_server_for(
        async || {
            list_scopes_over_tls(
                server.addr(),
                &pki.ca,
                Some((&pki.stranger_cert, &pki.stranger_key)),
            )
            .await
        },
        "UnknownCA",
        "a certificate from another CA",
    )
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_stop_startup_naming_the_flag_and_writing_nothing() {
    let pki = pki();
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = pki.dir.path().join("missing.pem");
    type Change<'a> = Box<dyn Fn(&mut Config) + 'a>;
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            Box::new(|c| c.server.tls_cert = Some(missing.clone())),
            "--tls-cert",
            "cannot read",
        ),
        (
            Box::new(|c| c.server.tls_cert = Some(garbage.clone())),
            "--tls-cert",
            "no PEM `CERTIFICATE` block",
        ),
        (
            Box::new(|c| c.server.tls_key = Some(garbage.clone())),
            "--tls-key",
            "no usable PEM private key",
        ),
        (
            // The client's key does not belong to the server's certificate.
            Box::new(|c| c.server.tls_key = Some(pki.client_key.clone())),
            "--tls-key",
            "cannot be used with --tls-cert",
        ),
        (
            Box::new(|c| c.server.tls_client_ca = Some(garbage.clone())),
            "--tls-client-ca",
            "no PEM `CERTIFICATE` block",
        ),
        (
            Box::new(|c| c.server.tls_key = None),
            "--tls-cert",
            "requires --tls-key",
        ),
        (
            Box::new(|c| {
                c.server.tls_cert = None;
                c.server.tls_key = None;
            }),
            "--tls-client-ca",
            "requires --tls-cert and --tls-key",
        ),
    ];
    for (change, flag, reason) in cases {
        let database_dir = tempfile::tempdir().unwrap();
        let mut config = tls_config(&pki, true);
        change(&mut config);
        let error = match start(config, database_dir.path()).await {
            Ok(_) => panic!("{flag} {reason}: should not start"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with(flag), "names {flag}: {error}");
        assert!(error.contains(reason), "says {reason}: {error}");
        assert!(
            !database_dir.path().join("keyward.db").exists(),
            "nothing is written before TLS is checked"
        );
    }

    // The binary reports the same, as its one error line.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&missing)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "keyward: --tls-cert {}: cannot read",
            missing.display()
        )),
        "{stderr}"
    );
}

/// A KeyService client with the test CA's client certificate.
async fn mutual_tls_client(addr: SocketAddr, pki: &Pki) -> KeyServiceClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&pki.ca)))
        .domain_name("localhost")
        .identity(Identity::from_pem(
            read(&pki.client_cert),
            read(&pki.client_key),
        ));
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a client with a certificate connects");
    KeyServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_speaks_mutual_tls() {
    let pki = pki();
    let server = start(tls_config(&pki, true), pki.dir.path())
        .await
        .expect("starts with mutual TLS");
    let run = |with_identity: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .args(["keys", "create", "--account", "acct_tls", "--name", "bot"])
            .args(["--scopes", "orders:read", "--json", "--server"])
            .arg(format!("https://localhost:{}", server.addr().port()))
            .arg("--tls-ca")
            .arg(&pki.ca);
        if with_identity {
            command
                .arg("--tls-cert")
                .arg(&pki.client_cert)
                .arg("--tls-key")
                .arg(&pki.client_key);
        }
        command.output()
    };
    let refused = run(false).await.unwrap();
    assert!(!refused.status.success(), "no client certificate, no call");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("keyward: CreateKey failed"),
        "the CLI names the call that failed: {stderr}"
    );
    // Refused before the call reached keyward: nothing was created (asked
    // by a client with a certificate).
    let listed = mutual_tls_client(server.addr(), &pki)
        .await
        .list_keys(proto::ListKeysRequest {
            account_id: "acct_tls".into(),
            include_revoked: true,
            ..Default::default()
        })
        .await
        .expect("a client with a certificate may list")
        .into_inner();
    assert!(listed.keys.is_empty(), "{listed:?}");
    let created = run(true).await.unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(json["key"]["account_id"], "acct_tls");
    assert!(json["secret"].as_str().unwrap().starts_with("cc_"));
    server.shutdown().await.unwrap();
}
