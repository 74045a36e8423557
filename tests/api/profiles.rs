//! The shipped profiles as a newcomer meets them: every file in `profiles/`
//! passes validation (`Config::load` and `keyward check-config`), and
//! `keyward serve --config profiles/<name>.toml` starts keyward as that
//! product.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use keyward::config::Config;
use keyward::proto;
use keyward::proto::key_service_client::KeyServiceClient;

use crate::helpers::connect;

/// Each shipped profile and the key prefix it gives its product.
const PROFILES: [(&str, &str); 5] = [
    ("carboncopy", "cc_"),
    ("cryptorobot", "cr_live_"),
    ("csboard", "csb_pub_"),
    ("default", "kw_"),
    ("tradejournal", "tj_"),
];

/// A line `check-config` prints for each profile's `[[http.routes]]`.
fn a_route_line(profile: &str) -> &'static str {
    match profile {
        "carboncopy" => "    [0] GET /api/v1/portfolio...: key with portfolio:read\n",
        "cryptorobot" => {
            "    [0] GET /restricted: key with read:{query.resource} (templates filled in from the request)\n"
        }
        "csboard" => {
            "    [0] GET /v1/health: public (no key)\n    [1] POST /v1/orders: key with trading\n"
        }
        "default" => "    [0] GET /v1/projects...: key with projects:read\n",
        "tradejournal" => "    [1] PUT /api/v1/trades/{trade_id}/tags: key with write:tags\n",
        other => panic!("no route line for {other}"),
    }
}

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

#[test]
fn every_shipped_profile_loads_and_passes_validation() {
    let mut found: Vec<String> = std::fs::read_dir(profiles_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let expected: Vec<&str> = PROFILES.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        found, expected,
        "a profile without a test, or a test without a profile"
    );

    for (name, prefix) in PROFILES {
        let path = profiles_dir().join(format!("{name}.toml"));
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.key_format.prefix(), prefix, "{name}");
        assert!(!config.http.routes.is_empty(), "{name} names its routes");

        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("check-config")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {stdout} {:?}",
            output.stderr
        );
        assert!(
            stdout.starts_with(&format!("{}: ok", path.display())),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("{prefix}<")), "{stdout}");
        assert!(
            stdout.contains("\nEnvoy ext_authz ([http]):\n"),
            "{name}: {stdout}"
        );
        assert!(stdout.contains(a_route_line(name)), "{name}: {stdout}");
        assert!(
            stdout.contains("unmatched_route = deny: other requests are denied"),
            "{name}: {stdout}"
        );
    }
}

/// One flag makes keyward the product. (The test adds a free port and a
/// throwaway database so that it does not touch `./keyward.db`.)
#[tokio::test]
async fn every_profile_starts_keyward_as_its_product_with_one_flag() {
    for (name, prefix) in PROFILES {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::helpers::free_port("127.0.0.1");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("serve")
            .arg("--config")
            .arg(profiles_dir().join(format!("{name}.toml")))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(
                "KEYWARD_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("k.db").display()),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut listening = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                listening = true;
                break;
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("{name}: keyward serve exited: {exit:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(listening, "{name}: keyward serve did not start listening");

        let mut keys = KeyServiceClient::new(connect(addr).await);
        let catalog = keys
            .list_scopes(proto::ListScopesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(catalog.key_prefix, prefix, "{name}");
        let created = keys
            .create_key(proto::CreateKeyRequest {
                account_id: "newcomer".into(),
                name: "first key".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(created.secret.starts_with(prefix), "{name}");
        child.kill().await.unwrap();
    }
}
