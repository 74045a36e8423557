//! The API-keys settings page (`[settings_page]`) in a real browser: Debian's
//! headless Chromium driven through chromedriver (WebDriver, fantoccini)
//! against a real keyward on port 0 with a shipped profile, a user signed in
//! with a JWT the test signs. What the browser did is then checked against
//! keyward itself over gRPC (Authenticate, GetKey).
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` the browser
//! tests skip with a printed reason, and fail when `CI=true` (`.ci/run`
//! installs both). A failing browser test saves a screenshot to
//! `target/browser-screenshots/<test>.png`. Waits poll the page for the
//! state they expect (generous limits), never sleep for a fixed time.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyward::config::Config;
use keyward::proto;
use serde_json::{Value, json};

use crate::helpers::http_api::send;
use crate::helpers::{TestApp, free_port, running_in_ci, spawn_app_with};

/// Debian's paths; `KEYWARD_CHROMIUM` and `KEYWARD_CHROMEDRIVER` point
/// elsewhere (another distribution, or a check of the skip path).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn chromium() -> String {
    std::env::var("KEYWARD_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into())
}

fn chromedriver() -> String {
    std::env::var("KEYWARD_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into())
}
const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "keyward-page-test";
const ACCOUNT: &str = "user_page";
/// How long a wait for the page may take before the test fails: generous,
/// for a shared, loaded CI machine.
const WAIT: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A user JWT for `account` living from `iat` to `exp` (Unix seconds).
fn jwt_between(account: &str, iat: i64, exp: i64) -> String {
    let claims = json!({"sub": account, "iss": ISSUER, "aud": AUDIENCE, "iat": iat, "exp": exp});
    let private = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

fn jwt() -> String {
    jwt_between(ACCOUNT, now(), now() + 600)
}

/// A shipped profile as served, plus user JWTs on the management API (the
/// profiles leave `[auth.jwt]` to the deployment) and the HTTP listener on
/// a free port.
fn profile_with_jwts(name: &str) -> Config {
    let mut config = crate::helpers::envoy::profile(name);
    let auth = format!(
        r#"
[auth]
# The test checks keys over gRPC Authenticate without a token.
hot_path_requires_token = false

[auth.jwt]
issuers = ["{ISSUER}"]
audiences = ["{AUDIENCE}"]
public_key_files = ["{rs256}"]
rpcs = ["CreateKey", "RevokeKey", "UpdateKey", "GetKey", "ListKeys", "RotateKey"]
"#,
        rs256 = fixture("rs256-test-public.pem"),
    );
    config.auth = Config::parse(&auth, "page-test-auth.toml")
        .expect("valid test auth")
        .auth;
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

async fn serve(profile: &str) -> (TestApp, Config) {
    let config = profile_with_jwts(profile);
    let app = spawn_app_with(crate::helpers::Db::Sqlite, config.clone())
        .await
        .expect("SQLite always runs");
    (app, config)
}

fn page_url(app: &TestApp, config: &Config) -> String {
    format!(
        "http://{}{}",
        app.http_addr().expect("HTTP listener on"),
        config.settings_page.path
    )
}

// ----- the browser -----------------------------------------------------------

/// chromedriver (killed on drop) and a WebDriver session with headless
/// Chromium in a fresh profile directory.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Whether the browser tests can run here; `None` with the reason printed
/// when they cannot, a failure when `CI=true`.
fn browser_available(test: &str) -> bool {
    let missing: Vec<String> = [chromium(), chromedriver()]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{test}: {} missing (apt-get install -y chromium chromium-driver)",
        missing.join(" and ")
    );
    assert!(!running_in_ci(), "CI=true and {reason}");
    // Straight to the process's stderr: the test harness captures
    // `eprintln!` of passing tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped {reason}");
    false
}

impl Browser {
    async fn start() -> Self {
        let port = free_port("127.0.0.1");
        let driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("browser profile directory");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    // Without these, Chromium stalls on a closed network.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        // chromedriver takes a moment to listen: poll until a session opens.
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session from chromedriver: {error}"),
            }
        };
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }
}

/// Browsers running at once, across the test binary's threads.
static BROWSER_TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

/// Runs `test` in a fresh browser; on failure saves a screenshot to
/// `target/browser-screenshots/<name>.png`, then fails with the test's
/// panic. The browser session is closed either way.
async fn in_browser<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    if !browser_available(name) {
        return;
    }
    // A few browsers at a time, however many test threads: each headless
    // Chromium is a few hundred MB and several processes.
    let _turn = BROWSER_TURNS.acquire().await.expect("never closed");
    let browser = Browser::start().await;
    let outcome = std::panic::AssertUnwindSafe(test(browser.client.clone()))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        let directory = screenshot_dir();
        let _ = std::fs::create_dir_all(&directory);
        match browser.client.screenshot().await {
            Ok(png) => {
                let path = directory.join(format!("{name}.png"));
                let _ = std::fs::write(&path, png);
                eprintln!("screenshot of the failure: {}", path.display());
            }
            Err(error) => eprintln!("no screenshot: {error}"),
        }
    }
    let _ = browser.client.clone().close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-screenshots")
}

/// Polls `probe` (JavaScript returning a value, `null` while not there yet)
/// until it returns something; fails after [`WAIT`] naming `what`.
async fn wait_for(client: &Client, what: &str, probe: &str, args: Vec<Value>) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        match client.execute(probe, args.clone()).await {
            Ok(Value::Null) | Ok(Value::Bool(false)) => {}
            Ok(value) => return value,
            Err(error) => last = Value::String(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waited {WAIT:?} for {what}; last error: {last}");
}

/// Waits for an element matching `css` that is shown.
async fn shown(client: &Client, css: &str) -> fantoccini::elements::Element {
    wait_for(
        client,
        &format!("{css} to be shown"),
        "const e = document.querySelector(arguments[0]); return !!(e && e.offsetParent !== null || e && e.getClientRects().length);",
        vec![json!(css)],
    )
    .await;
    client.find(Locator::Css(css)).await.expect(css)
}

async fn text_of(client: &Client, css: &str) -> String {
    shown(client, css).await.text().await.expect("text")
}

/// Opens the page in standalone mode and signs in with `token`.
async fn sign_in(client: &Client, url: &str, token: &str) {
    client.goto(url).await.expect("open the page");
    let field = shown(client, "#kw-token").await;
    field.send_keys(token).await.expect("type the token");
    client
        .find(Locator::Css("#kw-signin button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits for the key list to have loaded (a table or the empty state).
async fn list_loaded(client: &Client) {
    wait_for(
        client,
        "the key list",
        "const l = document.querySelector('[data-kw=list]'); return !!l && l.getAttribute('aria-busy') === 'false';",
        vec![],
    )
    .await;
}

/// Where `secret` appears in the page: its DOM (markup and form values),
/// storage, cookies or URL.
async fn secret_traces(client: &Client, secret: &str) -> Value {
    client
        .execute(
            "const s = arguments[0];
             const found = [];
             if (document.documentElement.outerHTML.includes(s)) found.push('DOM');
             if ([...document.querySelectorAll('input, textarea, select')].some((e) => e.value.includes(s))) found.push('form value');
             if (document.body.innerText.includes(s)) found.push('text');
             if (JSON.stringify({ ...localStorage }).includes(s)) found.push('localStorage');
             if (JSON.stringify({ ...sessionStorage }).includes(s)) found.push('sessionStorage');
             if (document.cookie.includes(s)) found.push('cookie');
             if (location.href.includes(s)) found.push('URL');
             return found;",
            vec![json!(secret)],
        )
        .await
        .expect("look for the secret")
}

async fn click(client: &Client, css: &str) {
    shown(client, css).await.click().await.expect(css);
}

/// The row of the key named `name` (`tr[data-kw=key]`), once listed.
async fn row_status(client: &Client, name: &str) -> String {
    wait_for(
        client,
        &format!("the row of {name}"),
        "for (const row of document.querySelectorAll('tr[data-kw=key]')) {
           if (row.querySelector('.kw-name')?.textContent === arguments[0]) return row.dataset.status;
         }
         return null;",
        vec![json!(name)],
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

async fn row_text(client: &Client, name: &str) -> String {
    wait_for(
        client,
        &format!("the row of {name}"),
        "for (const row of document.querySelectorAll('tr[data-kw=key]')) {
           if (row.querySelector('.kw-name')?.textContent === arguments[0]) return row.innerText;
         }
         return null;",
        vec![json!(name)],
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

/// The row's button matching `css` (inside the row of `name`).
async fn in_row(client: &Client, name: &str, css: &str) {
    wait_for(
        client,
        &format!("{css} in the row of {name}"),
        "for (const row of document.querySelectorAll('tr[data-kw=key]')) {
           if (row.querySelector('.kw-name')?.textContent === arguments[0]) {
             const target = row.querySelector(arguments[1]);
             if (target && !target.disabled) { target.click(); return true; }
           }
         }
         return null;",
        vec![json!(name), json!(css)],
    )
    .await;
}

/// Creates a key through the dialog: `choose` picks the scopes in it.
async fn create_key<F, Fut>(client: &Client, name: &str, choose: F) -> String
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    click(client, "[data-kw=create]").await;
    shown(client, "[data-kw=name]")
        .await
        .send_keys(name)
        .await
        .unwrap();
    choose().await;
    click(client, "[data-kw=submit]").await;
    let secret = text_of(client, "[data-kw=secret]").await;
    click(client, "[data-kw=done]").await;
    wait_for(
        client,
        "the secret dialog to close",
        "return !document.querySelector('[data-kw=secret-dialog]') && !document.querySelector('[data-kw=create-dialog]');",
        vec![],
    )
    .await;
    secret
}

async fn authenticate(
    app: &mut TestApp,
    scheme: &str,
    secret: &str,
) -> proto::AuthenticateResponse {
    app.authenticate(&format!("{scheme} {secret}"), &[]).await
}

/// GetKey as the signed-in user.
async fn get_key(app: &mut TestApp, id: &str) -> proto::Key {
    let mut request = tonic::Request::new(proto::GetKeyRequest {
        account_id: ACCOUNT.into(),
        key_id: id.into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", jwt()).parse().unwrap(),
    );
    app.keys
        .get_key(request)
        .await
        .expect("GetKey")
        .into_inner()
        .key
        .expect("key")
}

// ----- served without a browser ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_config_are_served_with_a_self_only_policy() {
    let (app, config) = serve("csboard").await;
    let addr = app.http_addr().unwrap();
    let page = send(addr, "GET", "/settings/api-keys", &[], "").await;
    assert_eq!(page.status, 200, "{page:?}");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"
        ),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'self'"), "{csp}");
    assert!(
        page.body.contains("/settings/api-keys/assets/page.js"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no other origin in the page"
    );
    for asset in [
        "keyward-api-keys.js",
        "page.js",
        "api-keys.css",
        "theme.css",
    ] {
        let reply = send(
            addr,
            "GET",
            &format!("/settings/api-keys/assets/{asset}"),
            &[],
            "",
        )
        .await;
        assert_eq!(reply.status, 200, "{asset}: {reply:?}");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
        assert!(
            !reply.body.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
    }
    let theme = send(addr, "GET", "/settings/api-keys/assets/theme.css", &[], "").await;
    assert!(
        theme.body.contains("--kw-background: #0f1115;"),
        "{}",
        theme.body
    );
    let served = send(addr, "GET", "/settings/api-keys/config.json", &[], "")
        .await
        .json();
    assert_eq!(served["labels"]["create"], "Generate key");
    assert_eq!(served["labels"]["name"], "Label");
    assert_eq!(served["fields"]["name"], "label");
    assert_eq!(served["toggles"][0]["label"], "Trading enabled");
    assert_eq!(
        served["errors"][0]["message"],
        &*config.management_api.errors.unauthenticated.message
    );
    app.shutdown().await;

    // Off: not served, the API still is.
    let mut off = profile_with_jwts("csboard");
    off.settings_page.enabled = false;
    let app = spawn_app_with(crate::helpers::Db::Sqlite, off)
        .await
        .unwrap();
    let page = send(
        app.http_addr().unwrap(),
        "GET",
        "/settings/api-keys",
        &[],
        "",
    )
    .await;
    assert_eq!(page.status, 404);
    app.shutdown().await;
}

// ----- in the browser --------------------------------------------------------------

/// Carboncopy: create a key (resource rows of none/read/write), the secret
/// shown once, working against keyward, gone from the page when the dialog
/// closes and after a reload; revoke with a confirmation naming the key, then
/// the key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_shown_once_works_and_is_refused_once_revoked() {
    let (mut app, config) = serve("carboncopy").await;
    let url = page_url(&app, &config);
    let app_ref = &mut app;
    in_browser("a_key_is_shown_once_works_and_is_refused_once_revoked", |client| async move {
        sign_in(&client, &url, &jwt()).await;
        list_loaded(&client).await;
        assert!(text_of(&client, "[data-kw=empty]").await.contains("No API keys yet"));
        assert_eq!(text_of(&client, "[data-kw=usage]").await, "0 of 10 active keys");

        click(&client, "[data-kw=create]").await;
        shown(&client, "[data-kw=name]").await.send_keys("monitoring bot").await.unwrap();
        click(&client, "input[data-resource=portfolio][value=read]").await;
        click(&client, "input[data-resource=traders][value=write]").await;
        click(&client, "[data-kw=submit]").await;
        let secret = text_of(&client, "[data-kw=secret]").await;
        assert!(secret.starts_with("cc_") && secret.len() == 67, "{secret}");
        let warning = text_of(&client, ".kw-warning").await;
        assert!(warning.contains("only time the key is shown"), "{warning}");

        // The secret works: keyward knows it, with the scopes picked.
        let answer = authenticate(app_ref, "Bearer", &secret).await;
        assert!(answer.allowed, "{answer:?}");
        let key = answer.key.unwrap();
        assert_eq!(key.scopes, ["portfolio:read", "traders:write"]);

        click(&client, "[data-kw=done]").await;
        wait_for(&client, "the dialog to close", "return !document.querySelector('dialog');", vec![]).await;
        list_loaded(&client).await;
        assert_eq!(row_status(&client, "monitoring bot").await, "active");
        assert_eq!(secret_traces(&client, &secret).await, json!([]), "the secret left the page");
        let row = row_text(&client, "monitoring bot").await;
        assert!(row.contains("Portfolio: read") && row.contains("Traders: write"), "{row}");
        assert!(row.contains(&key.start), "the display start is shown: {row}");
        assert!(!row.contains("portfolio:read"), "scopes are named, not raw: {row}");
        // Nothing but keyward was contacted.
        let origins = client
            .execute("return [...new Set(performance.getEntriesByType('resource').map((e) => new URL(e.name).origin))];", vec![])
            .await
            .unwrap();
        assert_eq!(origins, json!([format!("http://{}", url.split('/').nth(2).unwrap())]));

        // A reload: signed out (the token was in memory only), and signed in
        // again the secret is nowhere.
        client.refresh().await.unwrap();
        shown(&client, "#kw-token").await;
        assert_eq!(secret_traces(&client, &secret).await, json!([]));
        sign_in(&client, &url, &jwt()).await;
        list_loaded(&client).await;
        assert_eq!(row_status(&client, "monitoring bot").await, "active");
        assert_eq!(secret_traces(&client, &secret).await, json!([]));

        // Revoke: the confirmation names the key; cancelling changes nothing.
        in_row(&client, "monitoring bot", "[data-kw=revoke]").await;
        let question = text_of(&client, "[data-kw=revoke-dialog] h2").await;
        assert_eq!(question, "Revoke “monitoring bot”?");
        click(&client, "[data-kw=revoke-dialog] [data-kw=cancel]").await;
        assert!(authenticate(app_ref, "Bearer", &secret).await.allowed);
        in_row(&client, "monitoring bot", "[data-kw=revoke]").await;
        click(&client, "[data-kw=confirm-revoke]").await;
        wait_for(
            &client,
            "the key shown revoked",
            "const row = document.querySelector('tr[data-kw=key]'); return row && row.dataset.status === 'revoked';",
            vec![],
        )
        .await;
        let row = row_text(&client, "monitoring bot").await;
        assert!(row.contains("Revoked"), "{row}");
        let refused = authenticate(app_ref, "Bearer", &secret).await;
        assert!(!refused.allowed, "{refused:?}");
        assert_eq!(text_of(&client, "[data-kw=usage]").await, "0 of 10 active keys");
    })
    .await;
    app.shutdown().await;
}

/// The journal's presets ("Read everything", "Custom") and CSBoard's
/// "Trading enabled" toggle give keys exactly the documented scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_and_the_trading_toggle_produce_the_documented_scopes() {
    let (mut journal, config) = serve("tradejournal").await;
    let url = page_url(&journal, &config);
    let app = &mut journal;
    in_browser(
        "presets_and_the_trading_toggle_produce_the_documented_scopes",
        |client| async move {
            sign_in(&client, &url, &jwt()).await;
            list_loaded(&client).await;
            // "Read everything": every read:* scope (read:catalog is everyone's).
            let everything = create_key(&client, "agent", || async {
                click(&client, "[data-kw=preset-read-everything]").await;
            })
            .await;
            let key = authenticate(app, "Bearer", &everything).await.key.unwrap();
            let reads: Vec<String> = config
                .catalog
                .definitions()
                .iter()
                .filter(|s| s.name.starts_with("read:"))
                .map(|s| s.name.clone())
                .collect();
            let mut effective = key.effective_scopes.clone();
            effective.sort();
            let mut expected = reads.clone();
            expected.sort();
            assert_eq!(effective, expected);
            assert!(row_text(&client, "agent").await.contains("Read everything"));

            // "Custom": exactly what was ticked, write without read allowed.
            let custom = create_key(&client, "audit logger", || async {
                click(&client, "[data-kw=preset-custom]").await;
                click(&client, "input[type=checkbox][value='write:trades']").await;
                click(&client, "input[type=checkbox][value='read:goals']").await;
            })
            .await;
            let key = authenticate(app, "Bearer", &custom).await.key.unwrap();
            let mut scopes = key.scopes.clone();
            scopes.sort();
            assert_eq!(scopes, ["read:goals", "write:trades"]);
            let row = row_text(&client, "audit logger").await;
            assert!(
                row.contains("Trades: write") && row.contains("Goals: read"),
                "{row}"
            );
        },
    )
    .await;
    journal.shutdown().await;

    let (mut csboard, config) = serve("csboard").await;
    let url = page_url(&csboard, &config);
    let app = &mut csboard;
    in_browser("presets_and_the_trading_toggle_produce_the_documented_scopes_csboard", |client| async move {
        sign_in(&client, &url, &jwt()).await;
        list_loaded(&client).await;
        assert_eq!(text_of(&client, "[data-kw=create]").await, "Generate key");
        // "Choose a label", trading off: a read-only key.
        let secret = create_key(&client, "price-tracker-prod", || async {}).await;
        assert!(secret.starts_with("csb_pub_"), "{secret}");
        let key = authenticate(app, "Bearer", &secret).await.key.unwrap();
        assert_eq!(key.effective_scopes, ["read"]);
        // "toggle Trading enabled" in the key list: trading granted...
        in_row(&client, "price-tracker-prod", "[data-kw=toggle-tradingEnabled]").await;
        wait_for(
            &client,
            "the toggle on",
            "return document.querySelector('[data-kw=toggle-tradingEnabled]')?.getAttribute('aria-checked') === 'true';",
            vec![],
        )
        .await;
        let key = get_key(app, &key.id).await;
        assert_eq!(key.scopes, ["trading"], "{key:?}");
        let trading = app.authenticate(&format!("Bearer {secret}"), &["trading"]).await;
        assert!(trading.allowed, "{trading:?}");
        // ... and withdrawn.
        in_row(&client, "price-tracker-prod", "[data-kw=toggle-tradingEnabled]").await;
        wait_for(
            &client,
            "the toggle off",
            "return document.querySelector('[data-kw=toggle-tradingEnabled]')?.getAttribute('aria-checked') === 'false';",
            vec![],
        )
        .await;
        let refused = app.authenticate(&format!("Bearer {secret}"), &["trading"]).await;
        assert!(!refused.allowed, "{refused:?}");
    })
    .await;
    csboard.shutdown().await;
}

/// CryptoRobot: its documented responses carry no expiry or revocation
/// time; the page still creates (the read-only preset, sent as scope names)
/// and lists. An expired JWT then shows the profile's 401 text and a way to
/// sign in again, not a broken page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_shows_the_products_401_text() {
    let (mut app, config) = serve("cryptorobot").await;
    let url = page_url(&app, &config);
    let unauthenticated = config
        .management_api
        .errors
        .unauthenticated
        .message
        .to_string();
    let app_ref = &mut app;
    in_browser(
        "an_expired_jwt_shows_the_products_401_text",
        |client| async move {
            sign_in(&client, &url, &jwt()).await;
            list_loaded(&client).await;
            let secret = create_key(&client, "dashboard", || async {
                click(&client, "[data-kw=preset-read-only]").await;
            })
            .await;
            let key = authenticate(app_ref, "ApiKey", &secret).await.key.unwrap();
            assert!(key.scopes.iter().all(|s| s.starts_with("read:")) && !key.scopes.is_empty());
            assert!(
                row_text(&client, "dashboard")
                    .await
                    .contains("Read only (monitoring)")
            );

            let expired = jwt_between(ACCOUNT, now() - 3_600, now() - 1_800);
            sign_in(&client, &url, &expired).await;
            let alert = text_of(&client, "[data-kw=error]").await;
            assert!(
                alert.contains(&unauthenticated),
                "{alert:?} says {unauthenticated:?}"
            );
            assert!(
                !alert.contains("Error:") && !alert.contains(".js"),
                "no stack trace: {alert}"
            );
            assert!(
                text_of(&client, "[data-kw=sign-in]")
                    .await
                    .contains("Sign in again")
            );
            // The page around it is whole.
            assert_eq!(text_of(&client, "h2.kw-title").await, "API Keys");
        },
    )
    .await;
    app.shutdown().await;
}

/// Rotation (the journal): the new secret shown once and working, the old
/// key kept for the grace period picked and shown as expiring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_key_shows_the_new_secret_once_and_keeps_the_old_for_its_grace() {
    let (mut app, config) = serve("tradejournal").await;
    let url = page_url(&app, &config);
    let app_ref = &mut app;
    in_browser(
        "rotating_a_key_shows_the_new_secret_once_and_keeps_the_old_for_its_grace",
        |client| async move {
            sign_in(&client, &url, &jwt()).await;
            list_loaded(&client).await;
            let old_secret = create_key(&client, "sync job", || async {}).await;
            in_row(&client, "sync job", "[data-kw=rotate]").await;
            assert_eq!(
                text_of(&client, "[data-kw=rotate-dialog] h2").await,
                "Rotate “sync job”?"
            );
            click(&client, "[data-kw=grace-3600]").await;
            click(&client, "[data-kw=confirm-rotate]").await;
            let new_secret = text_of(&client, "[data-kw=secret]").await;
            assert_ne!(new_secret, old_secret);
            let new_key = authenticate(app_ref, "Bearer", &new_secret).await;
            assert!(new_key.allowed, "{new_key:?}");
            let old_key = authenticate(app_ref, "Bearer", &old_secret).await;
            assert!(old_key.allowed, "within its grace: {old_key:?}");
            assert_eq!(
                new_key.key.unwrap().scopes,
                old_key.key.unwrap().scopes,
                "the successor inherits the scopes"
            );
            click(&client, "[data-kw=done]").await;
            wait_for(
                &client,
                "the dialog to close",
                "return !document.querySelector('dialog');",
                vec![],
            )
            .await;
            assert_eq!(secret_traces(&client, &new_secret).await, json!([]));
            let statuses = wait_for(
                &client,
                "both keys listed",
                "const rows = [...document.querySelectorAll('tr[data-kw=key]')];
                 return rows.length === 2 ? rows.map((row) => row.dataset.status).sort() : null;",
                vec![],
            )
            .await;
            assert_eq!(statuses, json!(["active", "expiring"]));
        },
    )
    .await;
    app.shutdown().await;
}

/// The two embeddings of docs/settings-page.md, on a product's page served
/// from another origin: the web component with a token-provider callback
/// (module script, config and API calls through the API's CORS), and the
/// iframe handed its token by `postMessage` (allowed by `frame_ancestors`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_embeds_the_page_as_a_web_component_and_as_an_iframe() {
    let product = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let product_origin = format!("http://{}", product.local_addr().unwrap());
    let mut config = profile_with_jwts("csboard");
    config
        .management_api
        .cors_allowed_origins
        .push(product_origin.parse().unwrap());
    config.settings_page.frame_ancestors = vec![product_origin.clone()];
    let mut app = spawn_app_with(crate::helpers::Db::Sqlite, config)
        .await
        .unwrap();
    let keyward = format!("http://{}", app.http_addr().unwrap());
    let token = jwt();
    // The README's dozen lines, with the token handed over directly.
    let component = format!(
        r#"<!doctype html><html><head><title>Product</title></head><body>
<h1>Product settings</h1>
<script type="module" src="{keyward}/settings/api-keys/assets/keyward-api-keys.js"></script>
<keyward-api-keys id="api-keys"></keyward-api-keys>
<script type="module">
  const keys = document.getElementById("api-keys");
  await customElements.whenDefined("keyward-api-keys");
  keys.tokenProvider = async () => "{token}";
</script></body></html>"#
    );
    let frame = format!(
        r#"<!doctype html><html><head><title>Product</title></head><body>
<h1>Product settings</h1>
<iframe src="{keyward}/settings/api-keys" title="API keys" width="1000" height="700"></iframe>
<script type="module">
  const keyward = "{keyward}";
  window.addEventListener("message", (event) => {{
    if (event.origin !== keyward || event.data?.type !== "keyward:token-request") return;
    event.source.postMessage({{ type: "keyward:token", token: "{token}" }}, keyward);
  }});
</script></body></html>"#
    );
    let html = |body: String| move || async move { axum::response::Html(body) };
    let router = axum::Router::new()
        .route("/component", axum::routing::get(html(component)))
        .route("/frame", axum::routing::get(html(frame)));
    let product_server = tokio::spawn(async move {
        axum::serve(product, router).await.unwrap();
    });
    let app_ref = &mut app;
    let origin = product_origin.clone();
    in_browser(
        "a_product_embeds_the_page_as_a_web_component_and_as_an_iframe",
        |client| async move {
            client.goto(&format!("{origin}/component")).await.unwrap();
            list_loaded(&client).await;
            let secret = create_key(&client, "embedded", || async {}).await;
            assert!(authenticate(app_ref, "Bearer", &secret).await.allowed);
            assert_eq!(row_status(&client, "embedded").await, "active");
            assert_eq!(secret_traces(&client, &secret).await, json!([]));

            client.goto(&format!("{origin}/frame")).await.unwrap();
            client.enter_frame(0).await.unwrap();
            list_loaded(&client).await;
            assert_eq!(row_status(&client, "embedded").await, "active");
            in_row(&client, "embedded", "[data-kw=revoke]").await;
            click(&client, "[data-kw=confirm-revoke]").await;
            wait_for(
                &client,
                "the key revoked in the frame",
                "return document.querySelector('tr[data-kw=key]')?.dataset.status === 'revoked';",
                vec![],
            )
            .await;
            assert!(!authenticate(app_ref, "Bearer", &secret).await.allowed);
        },
    )
    .await;
    product_server.abort();
    app.shutdown().await;
}

/// Many keys come in pages, and the key limit is shown (and the create
/// button disabled, saying why) before the user runs into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_are_paged_and_the_key_limit_is_shown_before_it_is_reached() {
    let mut config = profile_with_jwts("carboncopy");
    config.settings_page.page_size = 4;
    let mut app = spawn_app_with(crate::helpers::Db::Sqlite, config.clone())
        .await
        .unwrap();
    for i in 0..config.max_active_keys_per_account {
        create_over_grpc(&mut app, &format!("key {i:02}"), &["account:read"], None).await;
    }
    let url = page_url(&app, &config);
    in_browser(
        "many_keys_are_paged_and_the_key_limit_is_shown_before_it_is_reached",
        |client| async move {
            sign_in(&client, &url, &jwt()).await;
            list_loaded(&client).await;
            let usage = text_of(&client, "[data-kw=usage]").await;
            assert_eq!(
                usage,
                "10 of 10 active keys: the limit. Revoke a key to create another."
            );
            let create = shown(&client, "[data-kw=create]").await;
            assert_eq!(create.attr("disabled").await.unwrap().as_deref(), Some("true"));
            let rows = "return [...document.querySelectorAll('tr[data-kw=key] .kw-name')].map((e) => e.textContent);";
            let first = client.execute(rows, vec![]).await.unwrap();
            assert_eq!(first.as_array().unwrap().len(), 4, "{first}");
            assert_eq!(text_of(&client, ".kw-pager span").await, "Page 1 of 3");
            click(&client, "[data-kw=next]").await;
            click(&client, "[data-kw=next]").await;
            assert_eq!(text_of(&client, ".kw-pager span").await, "Page 3 of 3");
            let last = client.execute(rows, vec![]).await.unwrap();
            assert_eq!(last.as_array().unwrap().len(), 2, "{last}");
            // A phone's width: nothing wider than the screen.
            client.set_window_size(390, 844).await.unwrap();
            wait_for(
                &client,
                "the page to fit 390 px",
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await;
            client.set_window_size(1280, 900).await.unwrap();
            // Revoking one makes room again.
            let name = last[0].as_str().unwrap().to_owned();
            in_row(&client, &name, "[data-kw=revoke]").await;
            click(&client, "[data-kw=confirm-revoke]").await;
            wait_for(
                &client,
                "room for a key",
                "return document.querySelector('[data-kw=usage]')?.textContent === '9 of 10 active keys'
                   && !document.querySelector('[data-kw=create]').disabled;",
                vec![],
            )
            .await;
        },
    )
    .await;
    app.shutdown().await;
}

/// Keyboard only (Carboncopy): sign in, reach "Create Key", name the key,
/// pick a level with the arrow keys, submit, close the secret dialog, all
/// without a click.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_can_be_created_with_the_keyboard_only() {
    let (mut app, config) = serve("carboncopy").await;
    let url = page_url(&app, &config);
    let app_ref = &mut app;
    in_browser(
        "a_key_can_be_created_with_the_keyboard_only",
        |client| async move {
            client.goto(&url).await.unwrap();
            shown(&client, "#kw-token").await;
            let typed = |text: String| {
                let client = client.clone();
                async move {
                    client
                        .active_element()
                        .await
                        .unwrap()
                        .send_keys(&text)
                        .await
                        .unwrap();
                }
            };
            let press = |key: Key| typed(char::from(key).to_string());
            // The token field has focus on load.
            typed(jwt()).await;
            press(Key::Enter).await;
            list_loaded(&client).await;
            // Tab until focus is on the create button (it follows the heading).
            tab_to(&client, "[data-kw=create]", &press).await;
            press(Key::Enter).await;
            wait_for(
                &client,
                "the name field focused",
                "return document.activeElement?.dataset.kw === 'name';",
                vec![],
            )
            .await;
            typed("keyboard key".into()).await;
            // The first resource row (Portfolio): into its radio group, then the
            // arrow key moves from None to Read.
            tab_to(
                &client,
                "input[data-resource=portfolio][value=none]",
                &press,
            )
            .await;
            press(Key::Right).await;
            wait_for(
            &client,
            "Portfolio: read chosen",
            "return document.querySelector('input[data-resource=portfolio][value=read]').checked;",
            vec![],
        )
        .await;
            tab_to(&client, "[data-kw=submit]", &press).await;
            press(Key::Enter).await;
            // The secret dialog opens with focus on "Copy key".
            wait_for(
                &client,
                "focus on Copy key",
                "return document.activeElement?.dataset.kw === 'copy';",
                vec![],
            )
            .await;
            let secret = text_of(&client, "[data-kw=secret]").await;
            let answer = authenticate(app_ref, "Bearer", &secret).await;
            assert!(answer.allowed);
            assert_eq!(answer.key.unwrap().scopes, ["portfolio:read"]);
            tab_to(&client, "[data-kw=done]", &press).await;
            press(Key::Enter).await;
            wait_for(
                &client,
                "the dialog closed",
                "return !document.querySelector('dialog');",
                vec![],
            )
            .await;
            assert_eq!(row_status(&client, "keyboard key").await, "active");
            assert_eq!(secret_traces(&client, &secret).await, json!([]));
            // Focus is back on the create button, for the next key.
            wait_for(
                &client,
                "focus back on create",
                "return document.activeElement?.dataset.kw === 'create';",
                vec![],
            )
            .await;
        },
    )
    .await;
    app.shutdown().await;
}

/// Presses Tab until the focused element matches `css` (at most 40 times).
async fn tab_to<P, Fut>(client: &Client, css: &str, press: &P)
where
    P: Fn(Key) -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..40 {
        let focused = client
            .execute(
                "return !!document.activeElement?.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await
            .unwrap();
        if focused == json!(true) {
            return;
        }
        press(Key::Tab).await;
    }
    panic!("Tab never reached {css}");
}

// ----- the README's screenshots ------------------------------------------------------

/// CreateKey over gRPC as the signed-in user (the screenshots' fixtures).
async fn create_over_grpc(
    app: &mut TestApp,
    name: &str,
    scopes: &[&str],
    expires_in_days: Option<i64>,
) -> proto::Key {
    let mut request = tonic::Request::new(proto::CreateKeyRequest {
        account_id: ACCOUNT.into(),
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: expires_in_days.map(|days| prost_types::Timestamp {
            seconds: now() + days * 86_400,
            nanos: 0,
        }),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", jwt()).parse().unwrap(),
    );
    app.keys
        .create_key(request)
        .await
        .expect("CreateKey")
        .into_inner()
        .key
        .expect("key")
}

async fn revoke_over_grpc(app: &mut TestApp, id: &str) {
    let mut request = tonic::Request::new(proto::RevokeKeyRequest {
        account_id: ACCOUNT.into(),
        key_id: id.into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", jwt()).parse().unwrap(),
    );
    app.keys.revoke_key(request).await.expect("RevokeKey");
}

async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/screenshots")
        .join(format!("{name}.png"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    eprintln!("wrote {}", path.display());
}

/// Writes `docs/screenshots/*.png` for the README, with the same harness:
/// `cargo test --test api settings_page::readme_screenshots -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshots/; run by hand when the page changes"]
async fn readme_screenshots() {
    let (mut app, config) = serve("carboncopy").await;
    let url = page_url(&app, &config);
    create_over_grpc(
        &mut app,
        "portfolio monitor",
        &["portfolio:read", "account:read"],
        None,
    )
    .await;
    create_over_grpc(
        &mut app,
        "copy-trading bot",
        &["traders:write", "orders:read"],
        Some(5),
    )
    .await;
    let old = create_over_grpc(&mut app, "old laptop", &["portfolio:read"], None).await;
    revoke_over_grpc(&mut app, &old.id).await;
    in_browser("readme_screenshots", |client| async move {
        client.set_window_size(1200, 560).await.unwrap();
        sign_in(&client, &url, &jwt()).await;
        list_loaded(&client).await;
        row_status(&client, "old laptop").await;
        save_screenshot(&client, "carboncopy-keys").await;
        click(&client, "[data-kw=create]").await;
        shown(&client, "[data-kw=name]")
            .await
            .send_keys("nightly export")
            .await
            .unwrap();
        click(&client, "input[data-resource=portfolio][value=read]").await;
        click(&client, "input[data-resource=orders][value=write]").await;
        client.set_window_size(1200, 1000).await.unwrap();
        save_screenshot(&client, "carboncopy-create").await;
    })
    .await;
    app.shutdown().await;

    let (mut app, config) = serve("csboard").await;
    let url = page_url(&app, &config);
    let trading = create_over_grpc(&mut app, "market-maker", &[], None).await;
    create_over_grpc(&mut app, "price-tracker-prod", &[], None).await;
    let _ = trading;
    in_browser("readme_screenshots_csboard", |client| async move {
        client.set_window_size(1200, 540).await.unwrap();
        sign_in(&client, &url, &jwt()).await;
        list_loaded(&client).await;
        in_row(&client, "market-maker", "[data-kw=toggle-tradingEnabled]").await;
        wait_for(
            &client,
            "trading on",
            "return document.querySelector('[aria-checked=true]') !== null;",
            vec![],
        )
        .await;
        save_screenshot(&client, "csboard-keys").await;
        // A phone's width: each key a card.
        client.set_window_size(390, 844).await.unwrap();
        save_screenshot(&client, "csboard-phone").await;
        client.set_window_size(1200, 560).await.unwrap();
        let _secret = create_key_keeping_dialog(&client, "price-tracker-staging").await;
        save_screenshot(&client, "csboard-secret").await;
    })
    .await;
    app.shutdown().await;
}

/// Creates a key and leaves its secret dialog open (for a screenshot).
async fn create_key_keeping_dialog(client: &Client, name: &str) -> String {
    click(client, "[data-kw=create]").await;
    shown(client, "[data-kw=name]")
        .await
        .send_keys(name)
        .await
        .unwrap();
    click(client, "[data-kw=submit]").await;
    text_of(client, "[data-kw=secret]").await
}
