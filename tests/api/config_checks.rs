//! Every new config key and flag of the production features, given
//! something wrong: the error names the file, the key (or flag) and the
//! reason.

use keyward::access_control::token_sha256_hex;
use keyward::config::Config;

#[test]
fn bad_auth_and_server_settings_name_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ec_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_pem = write("ec.pem", &ec_key.public_key_pem());
    let garbage = write("garbage.pem", "not a key");
    let hmac_jwks = write(
        "hmac.json",
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}"#,
    );
    let hash = token_sha256_hex("token");
    let token = |sha256: &str, rpcs: &str| {
        format!("[[auth.service_tokens]]\nname = \"t\"\nsha256 = \"{sha256}\"\nrpcs = {rpcs}\n")
    };
    let jwt = |extra: &str| {
        format!(
            "[auth.jwt]\nissuers = [\"iss\"]\naudiences = [\"aud\"]\npublic_key_files = [\"{ec_pem}\"]\n{extra}\n"
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            token("my-plain-token", "[\"ListKeys\"]"),
            "auth.service_tokens[0].sha256",
            "never the token itself",
        ),
        (
            token(&hash, "[\"DeleteKey\"]"),
            "auth.service_tokens[0].rpcs",
            "unknown RPC \"DeleteKey\"",
        ),
        (
            token(&hash, "[]"),
            "auth.service_tokens[0].rpcs",
            "list at least one RPC",
        ),
        (
            format!(
                "{}{}",
                token(&hash, "[\"ListKeys\"]"),
                token(&token_sha256_hex("other"), "[\"GetKey\"]")
            ),
            "auth.service_tokens[1].name",
            "used by two tokens",
        ),
        (
            token(&hash, "[\"ListKeys\"]").replace("rpcs", "rpc"),
            "auth.service_tokens[0].rpc",
            "unknown field `rpc`",
        ),
        (
            token(&hash, "[\"ListKeys\"]").replace("name = \"t\"", "name = \"\""),
            "auth.service_tokens[0].name",
            "must be 1 to 64 characters",
        ),
        (
            format!(
                "{}{}",
                token(&hash, "[\"ListKeys\"]"),
                token(&hash, "[\"GetKey\"]").replace("name = \"t\"", "name = \"u\"")
            ),
            "auth.service_tokens[1].sha256",
            "configured twice",
        ),
        (
            "[auth.jwt]\nissuers = [\"iss\"]\naudiences = [\"\"]\n".into(),
            "auth.jwt.audiences",
            "list the accepted `aud` values",
        ),
        (
            "[server]\ntls_client_ca = \" \"\n".into(),
            "server.tls_client_ca",
            "must be a file path",
        ),
        (
            format!(
                "[auth]\nhot_path_requires_token = true\n{}",
                token(&hash, "[\"ListKeys\"]")
            ),
            "auth.hot_path_requires_token",
            "no service token lists a hot-path RPC",
        ),
        (
            "[auth]\nhot_path_requires_token = \"yes\"\n".into(),
            "auth.hot_path_requires_token",
            "invalid type",
        ),
        (
            "[auth.jwt]\nissuers = [\"iss\"]\naudiences = [\"aud\"]\n".into(),
            "auth.jwt",
            "set public_key_files or jwks_file",
        ),
        (
            "[auth.jwt]\nissuers = []\naudiences = [\"aud\"]\n".into(),
            "auth.jwt.issuers",
            "list the accepted `iss` values",
        ),
        (
            jwt("algorithms = [\"HS256\"]"),
            "auth.jwt.algorithms",
            "only asymmetric algorithms",
        ),
        (
            jwt("algorithms = [\"XS999\"]"),
            "auth.jwt.algorithms",
            "not an algorithm",
        ),
        (
            jwt("algorithms = [\"EdDSA\"]"),
            "auth.jwt.algorithms",
            "fits none of the accepted algorithms",
        ),
        (
            jwt("leeway_seconds = 301"),
            "auth.jwt.leeway_seconds",
            "between 0 and 300",
        ),
        (
            jwt("rpcs = [\"Authenticate\"]"),
            "auth.jwt.rpcs",
            "user JWTs may call only CreateKey, RevokeKey, UpdateKey, GetKey, ListKeys, RotateKey, ImportKeys, ListKeyEvents, CheckScope, WatchRevocations, not Authenticate",
        ),
        (
            jwt("rpcs = [\"RecordUsage\"]"),
            "auth.jwt.rpcs",
            "not RecordUsage",
        ),        (
            jwt("rpcs = [\"ListKeys\", \"Check\"]"),
            "auth.jwt.rpcs",
            "not Check",
        ),
        (
            jwt("max_lifetime_seconds = 59"),
            "auth.jwt.max_lifetime_seconds",
            "between 60 and 2592000",
        ),
        (
            jwt("max_lifetime_seconds = 2592001"),
            "auth.jwt.max_lifetime_seconds",
            "between 60 and 2592000",
        ),
        (
            jwt("max_lifetime_seconds = -5"),
            "auth.jwt.max_lifetime_seconds",
            "invalid value",
        ),
        (
            format!(
                "{}trust_client_ip = true\n",
                token(&hash, "[\"ListKeys\"]")
            ),
            "auth.service_tokens[0].trust_client_ip",
            "only matters for hot-path RPCs",
        ),
        (
            format!(
                "{}trust_client_ip = \"yes\"\n",
                token(&hash, "[\"Check\"]")
            ),
            "auth.service_tokens[0].trust_client_ip",
            "invalid type",
        ),
        (
            "[feed]\nmax_watchers_per_caller = 0\n".into(),
            "feed.max_watchers_per_caller",
            "between 1 and 1000000",
        ),
        (
            jwt("subject_claim = \" \""),
            "auth.jwt.subject_claim",
            "must not be empty",
        ),
        (
            jwt("").replace(&ec_pem, "/no/such/key.pem"),
            "auth.jwt.public_key_files[0]",
            "cannot read",
        ),
        (
            jwt("").replace(&ec_pem, &garbage),
            "auth.jwt.public_key_files[0]",
            "holds no EC, RSA or Ed25519 public key",
        ),
        (
            jwt(&format!("jwks_file = \"{garbage}\"")),
            "auth.jwt.jwks_file",
            "is not a JWKS",
        ),
        (
            jwt(&format!("jwks_file = \"{hmac_jwks}\"")),
            "auth.jwt.jwks_file",
            "symmetric",
        ),
        (
            "[server]\nmetrics_listen = \"everywhere\"\n".into(),
            "server.metrics_listen",
            "not an address",
        ),
        (
            "[server]\nhttp_listen = \"8080\"\n".into(),
            "server.http_listen",
            "not an address",
        ),
        (
            "[management_api]\ncreate = \"POST keys\"\n".into(),
            "management_api.create",
            "not a route",
        ),
        (
            "[management_api.fields]\nsecret = \"\"\n".into(),
            "management_api.fields.secret",
            "the secret is shown only there",
        ),
        (
            "[server]\ntls_cert = \"\"\n".into(),
            "server.tls_cert",
            "must be a file path",
        ),
        (
            "[server]\ntls_key = \"  \"\n".into(),
            "server.tls_key",
            "must be a file path",
        ),
        (
            jwt("algorithms = []"),
            "auth.jwt.algorithms",
            "list at least one algorithm",
        ),
        (
            format!("[[scopes]]\nname = \"a\"\ndescription = \"{}\"\n", "d".repeat(501)),
            "scopes[0].description",
            "at most 500 characters, got 501",
        ),
        (
            "[[scopes]]\nname = \"a\"\ndescription = \"two\\nlines\"\n".into(),
            "scopes[0].description",
            "without control characters",
        ),
        (
            "[[scopes]]\nname = \"a\"\ndescription = 5\n".into(),
            "scopes[0].description",
            "invalid type",
        ),
        (
            "[[scopes]]\nname = \"a\"\nauto_grant = \"yes\"\n".into(),
            "scopes[0].auto_grant",
            "invalid type",
        ),
        (
            "[[scopes]]\nname = \"a\"\nreserved = 1\n".into(),
            "scopes[0].reserved",
            "invalid type",
        ),
        (
            "[[scopes]]\nname = \"a\"\ndenial_code = \"c\"\ndenial_message = \" \"\n".into(),
            "scopes[0].denial_message",
            "message must be 1 to 500 characters",
        ),
        (
            format!(
                "[[scopes]]\nname = \"a\"\ndenial_code = \"c\"\ndenial_message = \"{}\"\n",
                "m".repeat(501)
            ),
            "scopes[0].denial_message",
            "message must be 1 to 500 characters",
        ),
        (
            "[[scopes]]\nname = \"a\"\ndenial_code = \"not ok\"\ndenial_message = \"m\"\n".into(),
            "scopes[0].denial_code",
            "must be 1 to 64 characters of a-z A-Z 0-9 _ . -",
        ),
        (
            "[[scopes]]\nname = \"a\"\ndenial_message = \"m\"\n".into(),
            "scopes[0]",
            "denial_code and denial_message go together",
        ),
        (
            format!(
                "[[scopes]]\nname = \"a\"\n[[presets]]\nname = \"p\"\nscopes = [\"a\"]\ndescription = \"{}\"\n",
                "d".repeat(501)
            ),
            "presets[0].description",
            "at most 500 characters, got 501",
        ),
        (
            "[[scopes]]\nname = \"a\"\n[[presets]]\nname = \"p\"\nscopes = [\"a\"]\ndescription = [\"x\"]\n".into(),
            "presets[0].description",
            "invalid type",
        ),
        (
            "[rate_limit]\nrequests = 10\nper_seconds = 0\n".into(),
            "rate_limit.per_seconds",
            "between 1 and 86400, got 0",
        ),
        (
            "[rate_limit]\nrequests = 10\nper_seconds = 86401\n".into(),
            "rate_limit.per_seconds",
            "between 1 and 86400, got 86401",
        ),
        (
            "[rate_limit]\nrequests = 0\nper_seconds = 60\n".into(),
            "rate_limit.requests",
            "at least 1",
        ),
        (
            "[rate_limit]\nrequests = -1\nper_seconds = 60\n".into(),
            "rate_limit.requests",
            "invalid value",
        ),
        (
            token(&hash, "[\"ListKeys\"]")
                .replace("name = \"t\"", &format!("name = \"{}\"", "t".repeat(65))),
            "auth.service_tokens[0].name",
            "must be 1 to 64 characters",
        ),
        (jwt("rpcs = []"), "auth.jwt.rpcs", "RPC"),
        (jwt("rpcs = [\"Nope\"]"), "auth.jwt.rpcs", "unknown RPC \"Nope\""),
        (
            "[auth.jwt]\nissuers = [\"iss\"]\naudiences = [\"aud\"]\njwks_file = \"/no/such/jwks.json\"\n"
                .into(),
            "auth.jwt.jwks_file",
            "/no/such/jwks.json",
        ),
    ];
    for (text, key, reason) in cases {
        let error = Config::parse(&text, "profile.toml")
            .err()
            .unwrap_or_else(|| panic!("should be refused:\n{text}"));
        assert_eq!(error.file, "profile.toml");
        assert_eq!(error.key, key, "{text}\n{error}");
        assert!(error.reason.contains(reason), "says {reason:?}: {error}");
        assert!(
            !error.reason.contains("my-plain-token"),
            "a pasted token is not echoed: {error}"
        );
    }
}

#[test]
fn bad_production_flags_are_named() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&["serve", "--metrics-listen", "nowhere"]);
    assert!(!ok && stderr.contains("--metrics-listen"), "{stderr}");
    let (ok, stderr) = run(&[
        "keys",
        "create",
        "--account",
        "a",
        "--name",
        "n",
        "--expires-in",
        "0s",
    ]);
    assert!(
        !ok && stderr.contains("--expires-in") && stderr.contains("longer than zero"),
        "{stderr}"
    );
    let (ok, stderr) = run(&[
        "keys",
        "list",
        "--account",
        "a",
        "--server",
        "https://127.0.0.1:1",
    ]);
    assert!(!ok && stderr.contains("needs --tls-ca"), "{stderr}");
    let (ok, stderr) = run(&["keys", "list", "--account", "a", "--server", "not a url"]);
    assert!(!ok && stderr.contains("--server \"not a url\""), "{stderr}");
    let (ok, stderr) = run(&["--log-format", "xml", "check-config", "x.toml"]);
    assert!(!ok && stderr.contains("--log-format"), "{stderr}");
    let (ok, stderr) = run(&["service-token", "--name"]);
    assert!(!ok && stderr.contains("--name"), "{stderr}");
}

/// TLS paths from the file are named by file and key; a flag that replaces
/// one is named by the flag. `serve` and `check-config` agree.
#[test]
fn tls_errors_name_the_file_and_key_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let garbage = garbage.display().to_string();
    let run = |command: &str, profile_text: &str, flags: &[&str]| {
        let profile = dir.path().join("tls.toml");
        std::fs::write(&profile, profile_text).unwrap();
        let mut keyward = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        keyward.arg(command);
        if command == "serve" {
            keyward.args(["--listen", "127.0.0.1:0", "--config"]);
        }
        let output = keyward
            .arg(&profile)
            .args(flags)
            .env("RUST_LOG", "warn")
            .env(
                "KEYWARD_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("k.db").display()),
            )
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{profile_text} {flags:?}");
        (
            profile.display().to_string(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let cases: Vec<(String, Vec<&str>, String)> = vec![
        (
            "[server]\ntls_cert = \"/no/such/cert.pem\"\ntls_key = \"/no/such/key.pem\"\n".into(),
            vec![],
            "`server.tls_cert`: /no/such/cert.pem: cannot read".into(),
        ),
        (
            format!("[server]\ntls_cert = \"{garbage}\"\ntls_key = \"/no/such/key.pem\"\n"),
            vec![],
            format!("`server.tls_cert`: {garbage}: holds no PEM `CERTIFICATE` block"),
        ),
        (
            "[server]\ntls_cert = \"/no/such/cert.pem\"\n".into(),
            vec![],
            "`server.tls_cert`: /no/such/cert.pem: requires `server.tls_key` (or --tls-key) too"
                .into(),
        ),
        (
            "[server]\ntls_client_ca = \"/no/such/ca.pem\"\n".into(),
            vec![],
            "`server.tls_client_ca`: /no/such/ca.pem: requires `server.tls_cert` (or --tls-cert) and `server.tls_key` (or --tls-key)".into(),
        ),
    ];
    for (text, flags, expected) in &cases {
        for command in ["serve", "check-config"] {
            let (profile, stderr) = run(command, text, flags);
            assert!(
                stderr.contains(&format!("keyward: {profile}: {expected}")),
                "{command}: {stderr}"
            );
        }
    }

    // The key file comes from the profile, the certificate from the flag.
    let (profile, stderr) = run(
        "serve",
        &format!("[server]\ntls_cert = \"/no/such/cert.pem\"\ntls_key = \"{garbage}\"\n"),
        &["--tls-cert", "/no/such/flag-cert.pem"],
    );
    assert!(
        stderr.contains("keyward: --tls-cert /no/such/flag-cert.pem: cannot read"),
        "{stderr}"
    );
    assert!(!stderr.contains(&profile), "{stderr}");
    assert!(
        !dir.path().join("k.db").exists(),
        "nothing is written before TLS is checked"
    );
}

/// Runs the real binary in `dir` with no inherited keyward settings, plus
/// `env`; returns (success, stderr).
fn run_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
    command.args(args).current_dir(dir).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The files in `dir` besides `keep`: what a refused start left behind.
fn left_behind(dir: &std::path::Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !keep.contains(&name.as_str()))
        .collect()
}

/// A port in use, an address that cannot be bound or a database that cannot
/// be opened stop `serve` with the file and key (or the flag) that chose it,
/// before any database file is created.
#[test]
fn startup_failures_name_the_setting_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let database = format!("sqlite://{}", dir.path().join("k.db").display());
    let missing_dir = format!("sqlite://{}", dir.path().join("no/such/k.db").display());
    let profile = |server: &str| {
        std::fs::write(
            dir.path().join("profile.toml"),
            format!("[server]\n{server}"),
        )
        .unwrap();
    };
    let cases: Vec<(String, Vec<String>, String)> = vec![
        (
            format!("listen = \"{taken}\"\ndatabase_url = \"{database}\"\n"),
            vec![],
            format!("profile.toml: `server.listen`: {taken}: cannot listen"),
        ),
        (
            format!(
                "listen = \"127.0.0.1:0\"\nmetrics_listen = \"{taken}\"\ndatabase_url = \"{database}\"\n"
            ),
            vec![],
            format!("profile.toml: `server.metrics_listen`: {taken}: cannot listen"),
        ),
        (
            format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"{missing_dir}\"\n"),
            vec![],
            format!("profile.toml: `server.database_url`: {missing_dir}: cannot open the database"),
        ),
        (
            format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"{database}\"\n"),
            vec!["--listen".into(), taken.clone()],
            format!("--listen {taken}: cannot listen"),
        ),
        (
            format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"{database}\"\n"),
            vec!["--metrics-listen".into(), taken.clone()],
            format!("--metrics-listen {taken}: cannot listen"),
        ),
        (
            format!(
                "listen = \"127.0.0.1:0\"\nhttp_listen = \"{taken}\"\ndatabase_url = \"{database}\"\n"
            ),
            vec![],
            format!("profile.toml: `server.http_listen`: {taken}: cannot listen"),
        ),
        (
            format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"{database}\"\n"),
            vec!["--http-listen".into(), taken.clone()],
            format!("--http-listen {taken}: cannot listen"),
        ),
        (
            // No management credentials: the HTTP API may only be on loopback.
            format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"{database}\"\n"),
            vec!["--http-listen".into(), "0.0.0.0:0".into()],
            "may only be served on a loopback address, not 0.0.0.0:0".into(),
        ),
        (
            format!("listen = \"127.0.0.1:0\"\ndatabase_url = \"{database}\"\n"),
            vec!["--database-url".into(), missing_dir.clone()],
            format!("--database-url {missing_dir}: cannot open the database"),
        ),
    ];
    // A password in the URL is redacted in the error.
    let (ok, stderr) = run_in(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://kw:s3cret@127.0.0.1:1/kw",
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr
            .contains("--database-url postgres://kw:***@127.0.0.1:1/kw: cannot open the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    for (server, flags, expected) in cases {
        profile(&server);
        let mut args = vec!["serve", "--config", "profile.toml"];
        args.extend(flags.iter().map(String::as_str));
        let (ok, stderr) = run_in(dir.path(), &args, &[]);
        assert!(!ok, "{args:?} started");
        assert!(
            stderr.contains(&expected),
            "{args:?}: wanted {expected:?} in\n{stderr}"
        );
        assert_eq!(
            left_behind(dir.path(), &["profile.toml", "no"]),
            Vec::<String>::new(),
            "{args:?} left files behind"
        );
    }
}

/// Each setting's environment variable, given something wrong: the command
/// stops naming the setting, and nothing is written.
#[test]
fn bad_environment_values_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], (&str, &str), &str)] = &[
        (
            &["serve"],
            ("KEYWARD_CONFIG", "/no/such.toml"),
            "/no/such.toml",
        ),
        (&["serve"], ("KEYWARD_LISTEN", "nowhere"), "--listen"),
        (
            &["serve"],
            ("KEYWARD_METRICS_LISTEN", "nowhere"),
            "--metrics-listen",
        ),
        (
            &["serve"],
            ("KEYWARD_DATABASE_URL", "mysql://db/kw"),
            "--database-url",
        ),
        (
            &["serve"],
            ("KEYWARD_TLS_CERT", "/no/such.pem"),
            "--tls-cert",
        ),
        (
            &["serve"],
            ("KEYWARD_TLS_CLIENT_CA", "/no/such.pem"),
            "--tls-client-ca",
        ),
        (
            &["serve"],
            ("KEYWARD_INSECURE_OPEN_MANAGEMENT", "maybe"),
            "--insecure-open-management",
        ),
        (
            &["serve"],
            ("KEYWARD_INSECURE_OPEN_MANAGEMENT", "1"),
            "--insecure-open-management",
        ),
        (&["serve"], ("KEYWARD_LOG_FORMAT", "xml"), "--log-format"),
        (
            &["serve"],
            ("RUST_LOG", "keyward=loud"),
            "RUST_LOG \"keyward=loud\"",
        ),
        (
            &["check-config", "profile.toml"],
            ("RUST_LOG", "[{"),
            "RUST_LOG \"[{\"",
        ),
        (
            &["keys", "list", "--account", "a"],
            ("KEYWARD_SERVER", "not a url"),
            "--server \"not a url\"",
        ),
        (
            &["keys", "list", "--account", "a"],
            ("KEYWARD_TOKEN", "bad\ntoken"),
            "--token holds characters not allowed",
        ),
    ];
    for (args, (name, value), expected) in cases {
        let (ok, stderr) = run_in(dir.path(), args, &[(*name, *value)]);
        assert!(!ok, "{name}={value:?} {args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{name}={value:?}: wanted {expected:?} in\n{stderr}"
        );
        assert_eq!(
            left_behind(dir.path(), &[]),
            Vec::<String>::new(),
            "{name}={value:?} left files behind"
        );
    }
    // Turned off by the environment, open management on 0.0.0.0 is refused.
    let (ok, stderr) = run_in(
        dir.path(),
        &["serve", "--listen", "0.0.0.0:0"],
        &[("KEYWARD_INSECURE_OPEN_MANAGEMENT", "false")],
    );
    assert!(
        !ok && stderr.contains("only be served on a loopback address"),
        "{stderr}"
    );
    assert_eq!(left_behind(dir.path(), &[]), Vec::<String>::new());
}

/// The operator CLI's connection flags, given something wrong.
#[test]
fn bad_operator_connection_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec!["keys", "list", "--account", "a"];
        args.extend_from_slice(extra);
        run_in(dir.path(), &args, &[])
    };
    let https = ["--server", "https://127.0.0.1:1"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&https[..], &["--tls-ca", "/no/such/ca.pem"]].concat(),
            "--tls-ca",
        ),
        (
            [&https[..], &["--tls-ca", "ca.pem", "--tls-cert", "ca.pem"]].concat(),
            "--tls-cert and --tls-key go together",
        ),
        (
            [&https[..], &["--tls-ca", "ca.pem", "--tls-key", "ca.pem"]].concat(),
            "--tls-cert and --tls-key go together",
        ),
        (vec!["--tls-ca", "ca.pem"], "need an https:// --server"),
        (vec!["--tls-key", "ca.pem"], "need an https:// --server"),
        (vec!["--tls-domain", "keyward"], "need an https:// --server"),
        (
            vec!["--token", "bad\ntoken"],
            "--token holds characters not allowed",
        ),
    ];
    for (extra, expected) in cases {
        let (ok, stderr) = list(&extra);
        assert!(!ok, "{extra:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{extra:?}: wanted {expected:?} in\n{stderr}"
        );
        assert!(
            !stderr.contains("bad\ntoken"),
            "the token is not echoed: {stderr}"
        );
    }
}
