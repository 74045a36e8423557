//! Unit tests for `config`: whole files through [`Config::parse`].

use super::*;

mod http;

#[test]
fn no_file_means_the_carboncopy_defaults() {
    let config = Config::default();
    assert_eq!(config.key_format.prefix(), "cc_");
    assert_eq!(config.key_format.body_length(), 64);
    assert_eq!(config.max_active_keys_per_account, 10);
    assert_eq!(config.catalog.definitions().len(), 7);
    assert_eq!(&*config.denials.invalid.code, "unauthorized");
    assert_eq!(config.default_rate_limit, None);
    assert_eq!(config.bans.max_failures, 10);
    assert_eq!(config.feed.freshness_bound, Duration::from_secs(2));
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = Config::parse("", "empty.toml").unwrap();
    assert_eq!(config.key_format, Config::default().key_format);
}

#[test]
fn a_full_profile_parses() {
    let text = r#"
        [server]
        listen = "0.0.0.0:6000"
        database_url = "postgres://db/keyward"

        [keys]
        prefix = "csb_pub_"
        body_length = 40
        alphabet = "base62"
        schemes = ["Bearer"]
        max_active_per_account = 3

        [[scopes]]
        name = "read"
        auto_grant = true

        [[scopes]]
        name = "trading"
        denial_code = "trading_not_enabled"
        denial_message = "Trading is not enabled for this key."

        [[presets]]
        name = "everything"
        scopes = ["*"]

        [denials.missing]
        code = "missing_api_key"
        message = "No API key."

        [rate_limit]
        requests = 60
        per_seconds = 60

        [bans]
        ban_seconds = 0.5
    "#;
    let config = Config::parse(text, "csboard.toml").unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:6000".parse().unwrap());
    assert_eq!(config.key_format.prefix(), "csb_pub_");
    assert_eq!(config.max_active_keys_per_account, 3);
    let trading = config.catalog.lookup("trading").unwrap();
    assert_eq!(
        config.catalog.denial_text(trading).unwrap().code,
        "trading_not_enabled"
    );
    assert_eq!(&*config.denials.missing.code, "missing_api_key");
    assert_eq!(
        config.denials.missing.http_status, 401,
        "status kept from the default"
    );
    assert_eq!(
        config.default_rate_limit,
        Some(RateLimit::new(60, 60).unwrap())
    );
    assert_eq!(config.bans.ban_duration, Duration::from_millis(500));
}

#[test]
fn errors_name_the_file_and_key() {
    let cases = [
        (
            "[keys]\nmax_active_per_account = 0",
            "keys.max_active_per_account",
        ),
        (
            "[rate_limit]\nrequests = 0\nper_seconds = 1",
            "rate_limit.requests",
        ),
        ("[rate_limit]\nrequests = 1", "rate_limit"),
        ("[feed]\nwatch_buffer = 0", "feed.watch_buffer"),
        ("[feed]\nretention_hours = 0", "feed.retention_hours"),
        (
            "[last_used]\nflush_interval_seconds = 0",
            "last_used.flush_interval_seconds",
        ),
        (
            "[[scopes]]\nname = \"x\"\ndenial_code = \"only_code\"",
            "scopes[0]",
        ),
        (
            "[[presets]]\nname = \"p\"\nscopes = [\"nope\"]",
            "presets[0].scopes",
        ),
        (
            "[denials.missing]\ncode = \"has space\"",
            "denials.missing.code",
        ),
        (
            "[denials.unavailable]\nhttp_status = 500",
            "denials.unavailable.http_status",
        ),
        ("[cache]\nttl_seconds = nan", "cache.ttl_seconds"),
        ("unknown_table = 1", "unknown_table"),
        ("[server]\nmax_connections = 0", "server.max_connections"),
        (
            "[server]\nshutdown_grace_seconds = -1",
            "server.shutdown_grace_seconds",
        ),
        ("[keys]\nprefix = \"\"", "keys.prefix"),
        ("[keys]\nbody_length = 8", "keys.body_length"),
        ("[keys]\nbody_length = 600", "keys.body_length"),
        ("[keys]\nschemes = [\"Bear er\"]", "keys.schemes"),
        ("[keys]\ndisplay_chars = 40", "keys.display_chars"),
        ("[cache]\nnegative_capacity = 0", "cache.negative_capacity"),
        (
            "[cache]\nnegative_ttl_seconds = 0",
            "cache.negative_ttl_seconds",
        ),
        ("[feed]\npoll_interval_ms = 1", "feed.poll_interval_ms"),
        (
            "[feed]\nprune_interval_seconds = 0",
            "feed.prune_interval_seconds",
        ),
        (
            "[feed]\ncheckpoint_interval_seconds = 0",
            "feed.checkpoint_interval_seconds",
        ),
        ("[feed]\nmax_watchers = 0", "feed.max_watchers"),
        (
            "[feed]\nmin_revision_wait_ms = 0",
            "feed.min_revision_wait_ms",
        ),
        (
            "[feed]\nmin_revision_wait_ms = 60001",
            "feed.min_revision_wait_ms",
        ),
        (
            "[http]\nmin_revision_header = \"X-Keyward-Min-Revision\"",
            "http.min_revision_header",
        ),
        (
            "[http]\nmin_revision_header = \"content-length\"",
            "http.min_revision_header",
        ),
        ("[bans]\nmax_failures = 0", "bans.max_failures"),
        ("[bans]\nwindow_seconds = 0", "bans.window_seconds"),
        (
            "[bans]\nmax_tracked_addresses = 0",
            "bans.max_tracked_addresses",
        ),
        ("[bans]\nenabled = \"yes\"", "bans.enabled"),
        (
            "[[presets]]\nname = \"\"\nscopes = [\"*\"]",
            "presets[0].name",
        ),
        (
            "[[presets]]\nname = \"p\"\nscopes = [\"*\"]\n[[presets]]\nname = \"p\"\nscopes = [\"*\"]",
            "presets[1].name",
        ),
        (
            "[denials.insufficient_scope]\nhttp_status = 401",
            "denials.insufficient_scope.http_status",
        ),
        (
            "[denials.rate_limited]\nmessage = \"\"",
            "denials.rate_limited.message",
        ),
        (
            "[denials.too_many_failed_attempts]\nhttp_status = 500",
            "denials.too_many_failed_attempts.http_status",
        ),
        ("[denials.invalid]\ncode = \"\"", "denials.invalid.code"),
        ("[server]\nmax_connections = 1001", "server.max_connections"),
        (
            "[keys]\nmax_active_per_account = 100001",
            "keys.max_active_per_account",
        ),
        (
            "[keys]\nprefix = \"abcdefghijklmnopqrstuvwxyzabcdefg\"",
            "keys.prefix",
        ),
        ("[feed]\nfreshness_bound_ms = 10", "feed.freshness_bound_ms"),
        (
            "[feed]\nfreshness_bound_ms = 600001",
            "feed.freshness_bound_ms",
        ),
        (
            "[denials.missing]\nhttp_status = 70000",
            "denials.missing.http_status",
        ),
        ("[[scopes]]\ndescription = \"no name\"", "scopes[0]"),
    ];
    for (text, key) in cases {
        let error = Config::parse(text, "p.toml").unwrap_err();
        assert_eq!(error.file, "p.toml");
        assert_eq!(error.key, key, "{text:?}: {error}");
        assert!(!error.reason.is_empty());
        assert!(error.to_string().starts_with(&format!("p.toml: `{key}`: ")));
    }
}

/// Flags over the file: `cli::tests::flags_override_the_file_and_are_named_in_errors`.
#[test]
fn layering_prefers_the_file_then_defaults() {
    let config = Config::parse("[server]\nlisten = \"127.0.0.1:7000\"", "p.toml").unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(config.server.origins.listen.as_deref(), Some("p.toml"));
    assert_eq!(config.server.database_url.expose(), DEFAULT_DATABASE_URL);
    assert_eq!(config.server.origins.database_url, None);
    let config = Config::default();
    assert_eq!(config.server.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(config.server.database_url.expose(), DEFAULT_DATABASE_URL);
}
