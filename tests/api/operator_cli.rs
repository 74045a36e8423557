//! `keyward keys ...` against a real server: create, list, update, get,
//! revoke, in tables and JSON, with the service token from the environment;
//! per-key rate limits set, shown and cleared; and the CLI's own errors (no
//! token, bad lifetime, bad rate limit, unreachable server).

use std::time::{Duration, SystemTime};

use keyward::access_control::token_sha256_hex;
use keyward::config::Config;
use keyward::proto::denial::Reason;

use crate::helpers::{Db, TestApp, reason, spawn_app_with, test_config};

const OPERATOR_TOKEN: &str = "kwt_operator_cli_test_token";

/// Management locked by a token; the hot path opened on purpose, since
/// these tests check keys with the harness's token-less Authenticate.
async fn locked_app() -> TestApp {
    let text = format!(
        "[auth]\nhot_path_requires_token = false\n\n[[auth.service_tokens]]\nname = \"operator\"\nsha256 = \"{}\"\nrpcs = [\"CreateKey\", \"RevokeKey\", \"UpdateKey\", \"GetKey\", \"ListKeys\"]\n",
        token_sha256_hex(OPERATOR_TOKEN)
    );
    let mut config = test_config();
    config.auth = Config::parse(&text, "cli.toml").unwrap().auth;
    spawn_app_with(Db::Sqlite, config).await.unwrap()
}

/// Runs `keyward keys ARGS --server <app>` with the token in the environment.
async fn keys(app: &TestApp, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .arg("keys")
        .args(args)
        .args(["--server", &format!("http://{}", app.addr())])
        .env_remove("KEYWARD_TOKEN");
    if let Some(token) = token {
        command.env("KEYWARD_TOKEN", token);
    }
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn keys_json(app: &TestApp, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (ok, stdout, stderr) = keys(app, Some(OPERATOR_TOKEN), &args).await;
    assert!(ok, "keys {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_update_get_revoke_round_trip() {
    let mut app = locked_app().await;

    let created = keys_json(
        &app,
        &[
            "create",
            "--account",
            "acct_cli",
            "--name",
            "bot",
            "--scopes",
            "orders:read,traders:read",
            "--expires-in",
            "30d",
        ],
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cc_"));
    assert_eq!(
        created["key"]["scopes"],
        serde_json::json!(["traders:read", "orders:read"])
    );
    let expires: SystemTime =
        humantime::parse_rfc3339(created["key"]["expires_at"].as_str().unwrap()).unwrap();
    let lifetime = expires.duration_since(SystemTime::now()).unwrap();
    assert!(
        lifetime > Duration::from_secs(29 * 86_400) && lifetime <= Duration::from_secs(30 * 86_400),
        "{lifetime:?}"
    );
    assert!(app.authenticate(&secret, &["orders:read"]).await.allowed);

    let (ok, table, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &["list", "--account", "acct_cli"],
    )
    .await;
    assert!(ok, "{stderr}");
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&id) && row.contains("bot") && row.contains("traders:read,orders:read"),
        "{table}"
    );
    assert!(!table.contains(&secret), "list never shows a secret");

    let updated = keys_json(
        &app,
        &[
            "update",
            "--account",
            "acct_cli",
            "--id",
            &id,
            "--name",
            "renamed",
            "--scopes",
            "orders:write",
        ],
    )
    .await;
    assert_eq!(updated["name"], "renamed");
    assert_eq!(updated["scopes"], serde_json::json!(["orders:write"]));
    let fetched = keys_json(&app, &["get", "--account", "acct_cli", "--id", &id]).await;
    assert_eq!(fetched["name"], "renamed");
    assert_eq!(
        fetched["effective_scopes"],
        serde_json::json!(["orders:read", "orders:write"])
    );

    let revoked = keys_json(&app, &["revoke", "--account", "acct_cli", "--id", &id]).await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert_eq!(
        reason(&app.authenticate(&secret, &["orders:read"]).await),
        Reason::Revoked
    );
    assert_eq!(
        keys_json(&app, &["list", "--account", "acct_cli"]).await,
        serde_json::json!([])
    );
    let all = keys_json(
        &app,
        &["list", "--account", "acct_cli", "--include-revoked"],
    )
    .await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_prints_the_secret_once_in_the_table_form() {
    let app = locked_app().await;
    let (ok, stdout, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &[
            "create",
            "--account",
            "acct_t",
            "--name",
            "t",
            "--scopes",
            "orders:read",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let secret = stdout.lines().last().unwrap();
    assert!(secret.starts_with("cc_") && secret.len() == 67, "{stdout}");
    assert!(stdout.contains("secret (shown only now"), "{stdout}");
    assert!(!stderr.contains(secret));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_refusals_and_bad_input_clearly() {
    let app = locked_app().await;
    let (ok, _, stderr) = keys(&app, None, &["list", "--account", "acct_cli"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("ListKeys failed: Unauthenticated: missing credentials"),
        "{stderr}"
    );
    let (ok, _, stderr) = keys(&app, Some("kwt_wrong"), &["list", "--account", "acct_cli"]).await;
    assert!(!ok && stderr.contains("Unauthenticated"), "{stderr}");
    assert!(!stderr.contains("kwt_wrong"), "the token is not echoed");

    let (ok, _, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &[
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--expires-in",
            "soon",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("--expires-in"), "{stderr}");
    let (ok, _, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &[
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--scopes",
            "nope:read",
        ],
    )
    .await;
    assert!(
        !ok && stderr.contains("InvalidArgument") && stderr.contains("unknown scope"),
        "{stderr}"
    );
    let (ok, _, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &["update", "--account", "a", "--id", "key_x"],
    )
    .await;
    assert!(!ok && stderr.contains("nothing to update"), "{stderr}");

    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "keys",
            "list",
            "--account",
            "a",
            "--server",
            "http://127.0.0.1:1",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        !unreachable.status.success() && stderr.contains("cannot connect to http://127.0.0.1:1"),
        "{stderr}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_set_shown_and_cleared_from_the_cli() {
    let mut app = locked_app().await;
    let created = keys_json(
        &app,
        &[
            "create",
            "--account",
            "acct_rl",
            "--name",
            "limited",
            "--rate-limit",
            "2/60s",
        ],
    )
    .await;
    assert_eq!(
        created["key"]["rate_limit"],
        serde_json::json!({"requests": 2, "per_seconds": 60})
    );
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert!(app.authenticate(&secret, &[]).await.allowed);
    }
    assert_eq!(
        reason(&app.authenticate(&secret, &[]).await),
        Reason::RateLimited,
        "the server applies the limit the CLI set"
    );
    let (ok, table, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &["get", "--account", "acct_rl", "--id", &id],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        table.lines().next().unwrap().ends_with("RATE LIMIT"),
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().ends_with("2/60s"), "{table}");

    let updated = keys_json(
        &app,
        &[
            "update",
            "--account",
            "acct_rl",
            "--id",
            &id,
            "--rate-limit",
            "5/1m",
        ],
    )
    .await;
    assert_eq!(
        updated["rate_limit"],
        serde_json::json!({"requests": 5, "per_seconds": 60})
    );
    assert_eq!(updated["name"], "limited", "only the rate limit changed");
    let cleared = keys_json(
        &app,
        &[
            "update",
            "--account",
            "acct_rl",
            "--id",
            &id,
            "--rate-limit",
            "default",
        ],
    )
    .await;
    assert_eq!(cleared["rate_limit"], serde_json::Value::Null);
    let fetched = keys_json(&app, &["get", "--account", "acct_rl", "--id", &id]).await;
    assert_eq!(fetched["rate_limit"], serde_json::Value::Null);
    let (_, table, _) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &["list", "--account", "acct_rl"],
    )
    .await;
    assert!(
        table.lines().nth(1).unwrap().ends_with("default"),
        "{table}"
    );

    // Bad input: the syntax is checked by the CLI, the range by the server.
    let (ok, _, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &[
            "create",
            "--account",
            "acct_rl",
            "--name",
            "n",
            "--rate-limit",
            "10",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("--rate-limit"), "{stderr}");
    let (ok, _, stderr) = keys(
        &app,
        Some(OPERATOR_TOKEN),
        &[
            "create",
            "--account",
            "acct_rl",
            "--name",
            "n",
            "--rate-limit",
            "1/2d",
        ],
    )
    .await;
    assert!(
        !ok && stderr.contains("InvalidArgument")
            && stderr.contains("rate_limit.per_seconds: per_seconds must be between 1 and 86400"),
        "{stderr}"
    );
    assert_eq!(
        keys_json(&app, &["list", "--account", "acct_rl"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1,
        "the refused create wrote nothing"
    );
    app.shutdown().await;
}
