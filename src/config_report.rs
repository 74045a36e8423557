//! `keyward check-config FILE`: what a validated profile means, in plain
//! text, without starting anything. The report is a list of sections, each
//! a function from the config to its lines ([`SECTIONS`]); a new part of the
//! config adds one function and one entry.

use std::fmt::Write as _;

use crate::config::{Config, DEFAULT_DATABASE_URL, DEFAULT_LISTEN};
use crate::denial::DenialText;
use crate::ext_authz::{ErrorBodyStyle, RouteDefinition, UnmatchedRoute};
use crate::shared_limits::{LimitMode, LimitsBackend, OnBackendError};

/// One titled part of the report.
pub struct Section {
    pub title: &'static str,
    pub lines: fn(&Config) -> Vec<String>,
}

/// The report's sections, in order.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "Key format",
        lines: key_format,
    },
    Section {
        title: "Scopes",
        lines: scopes,
    },
    Section {
        title: "Presets",
        lines: presets,
    },
    Section {
        title: "Denials (code, HTTP status, message)",
        lines: denials,
    },
    Section {
        title: "Limits",
        lines: limits,
    },
    Section {
        title: "Failed-authentication bans",
        lines: bans,
    },
    Section {
        title: "Who may call what ([auth])",
        lines: access,
    },
    Section {
        title: "Server (flags and environment may override)",
        lines: server,
    },
    Section {
        title: "Envoy ext_authz ([http])",
        lines: http,
    },
    Section {
        title: "Key-management HTTP API ([management_api], served on server.http_listen)",
        lines: management_api,
    },
    Section {
        title: "API-keys settings page ([settings_page], served beside that API)",
        lines: settings_page,
    },
];

/// The whole report.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", config.source_name());
    for section in SECTIONS {
        let _ = writeln!(out, "\n{}:", section.title);
        for line in (section.lines)(config) {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn key_format(config: &Config) -> Vec<String> {
    let format = &config.key_format;
    let random = if format.checksum() {
        format.body_length() - crate::key_format::CHECKSUM_CHARS
    } else {
        format.body_length()
    };
    let mut lines = vec![
        format!(
            "{}<{} {} characters>  ({:.0} bits of randomness)",
            format.prefix(),
            format.body_length(),
            format.alphabet().name(),
            random as f64 * format.alphabet().bits_per_symbol()
        ),
        format!(
            "accepted as: {} <key>, or the bare key",
            format.schemes().join(" <key>, ")
        ),
    ];
    if format.checksum() {
        lines.push(format!(
            "checksum: the last {} characters are the base62 CRC32 of the {random} before them; a mismatch is malformed",
            crate::key_format::CHECKSUM_CHARS
        ));
    }
    lines.push(format!("secret scanners: {}", format.scanner_regex()));
    lines
}

fn scopes(config: &Config) -> Vec<String> {
    config
        .catalog
        .definitions()
        .iter()
        .map(|scope| {
            let mut line = scope.name.clone();
            let mut notes = Vec::new();
            if !scope.implies.is_empty() {
                notes.push(format!("implies {}", scope.implies.join(", ")));
            }
            if scope.auto_grant {
                notes.push("granted to every key".into());
            }
            if scope.reserved {
                notes.push("reserved: grantable, not used yet".into());
            }
            if let Some(denial) = &scope.denial {
                notes.push(format!("denied as {}: {:?}", denial.code, denial.message));
            }
            if !notes.is_empty() {
                let _ = write!(line, "  [{}]", notes.join("; "));
            }
            if !scope.description.is_empty() {
                let _ = write!(line, "  {}", scope.description);
            }
            line
        })
        .collect()
}

fn presets(config: &Config) -> Vec<String> {
    let catalog = &config.catalog;
    let presets = catalog.presets();
    if presets.is_empty() {
        return vec!["(none)".into()];
    }
    presets
        .iter()
        .map(|preset| {
            format!(
                "{}: {}",
                preset.name,
                catalog.names(preset.scopes).collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}

fn denials(config: &Config) -> Vec<String> {
    let denials = &config.denials;
    let line = |what: &str, text: &DenialText| {
        format!(
            "{what}: {} {} {:?}",
            text.code, text.http_status, &*text.message
        )
    };
    vec![
        line("missing credential", &denials.missing),
        line(
            "malformed, unknown, revoked or expired key",
            &denials.invalid,
        ),
        line("insufficient scope", &denials.insufficient_scope),
        line("rate limited", &denials.rate_limited),
        line("banned address", &denials.too_many_failed_attempts),
        line("unavailable (failing closed)", &denials.unavailable),
        line("address not allowed for the key", &denials.ip_not_allowed),
    ]
}

fn limits(config: &Config) -> Vec<String> {
    vec![
        format!(
            "at most {} active keys per account",
            config.max_active_keys_per_account
        ),
        format!(
            "rotation grace period: at most {}",
            humantime::format_duration(config.max_rotation_grace)
        ),
        shared_limits(config),
        match config.default_rate_limit {
            Some(limit) => format!(
                "default rate limit: {} requests per {} s per key ({})",
                limit.requests(),
                limit.per_seconds(),
                match config.limits.backend {
                    LimitsBackend::Local => "per replica",
                    LimitsBackend::Redis => "across replicas",
                }
            ),
            None => "default rate limit: none (keys may carry their own)".into(),
        },
        format!(
            "key cache: {} keys for {:?}; negative cache: {} for {:?}",
            config.cache.capacity,
            config.cache.ttl,
            config.cache.negative_capacity,
            config.cache.negative_ttl
        ),
        format!(
            "revocation feed: poll every {:?}; fail closed after {:?} without proof of freshness",
            config.feed.poll_interval, config.feed.freshness_bound
        ),
    ]
}

/// Where rate limits and failed-attempt counts are kept (`[limits]`).
fn shared_limits(config: &Config) -> String {
    let limits = &config.limits;
    match limits.backend {
        LimitsBackend::Local => {
            "rate limits and bans: in each replica's memory (limits.backend = \"local\")".into()
        }
        LimitsBackend::Redis => format!(
            "rate limits and bans: shared by all replicas through Redis at {} (key prefix {:?}, \
             mode {}, each call cut off after {:?}; when Redis fails: {})",
            limits.redis_url.as_ref().map_or_else(
                || "--redis-url / KEYWARD_REDIS_URL".into(),
                ToString::to_string
            ),
            limits.key_prefix,
            match limits.mode {
                LimitMode::Exact => "exact".to_owned(),
                LimitMode::Approximate { sync } =>
                    format!("approximate, leases of {sync:?} x 2 of the limit"),
            },
            limits.timeout,
            match limits.on_backend_error {
                OnBackendError::Deny => "deny limited requests with UNAVAILABLE",
                OnBackendError::Local => "fall back to per-replica limits",
            }
        ),
    }
}

fn bans(config: &Config) -> Vec<String> {
    let bans = &config.bans;
    if !bans.enabled {
        return vec!["off".into()];
    }
    vec![format!(
        "{} invalid credentials within {:?} ban an address for {:?} (tracking at most {} addresses)",
        bans.max_failures, bans.window, bans.ban_duration, bans.max_tracked_addresses
    )]
}

fn access(config: &Config) -> Vec<String> {
    let auth = &config.auth;
    let mut lines = Vec::new();
    if !auth.management_locked() {
        lines.push(
            "management RPCs: open (no credentials configured; loopback only unless --insecure-open-management)"
                .into(),
        );
    }
    for token in &auth.service_tokens {
        lines.push(format!(
            "service token {:?}: {}{}",
            token.name,
            token
                .rpcs
                .iter()
                .map(|rpc| rpc.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if token.trust_client_ip {
                "; trusted to state client addresses"
            } else {
                ""
            }
        ));
    }
    if let Some(jwt) = &auth.jwt {
        lines.push(format!(
            "user JWTs: {} for the account in claim `{}`; iss {}; aud {}; algorithms {:?}; leeway {} s; lifetime at most {} s; {} key(s) from {}",
            jwt.rpcs
                .iter()
                .map(|rpc| rpc.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            jwt.subject_claim,
            jwt.issuers.join(" | "),
            jwt.audiences.join(" | "),
            jwt.algorithms,
            jwt.leeway_seconds,
            jwt.max_lifetime_seconds,
            jwt.keys.len(),
            jwt.keys
                .iter()
                .map(|key| key.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let locked_without_credential = if auth.any_hot_path_credential() {
        ""
    } else {
        "; but no service token lists a hot-path RPC, so `serve` refuses to start: add one, or open the hot path on purpose (auth.hot_path_requires_token = false)"
    };
    lines.push(format!(
        "hot-path RPCs (Authenticate, CheckScope, WatchRevocations, Check): {}",
        match auth.hot_path_requires_token {
            Some(true) => "service token required".to_owned(),
            Some(false) => "open (auth.hot_path_requires_token = false)".to_owned(),
            None if auth.management_locked() => {
                format!("service token required (management needs credentials){locked_without_credential}")
            }
            None => "open on a loopback address; elsewhere a service token is required (see --insecure-open-hot-path)".to_owned(),
        }
    ));
    lines.push("ListScopes, health and reflection: open".into());
    lines
}

fn server(config: &Config) -> Vec<String> {
    let server = &config.server;
    let shown = |path: &Option<std::path::PathBuf>| {
        path.as_ref()
            .map_or_else(|| "-".into(), |p| p.display().to_string())
    };
    vec![
        format!(
            "listen: {}{}",
            server.listen,
            default_note(
                server.origins.listen.is_none() && server.listen.to_string() == DEFAULT_LISTEN
            )
        ),
        format!(
            "database: {}{}",
            server.database_url,
            default_note(
                server.origins.database_url.is_none()
                    && server.database_url.expose() == DEFAULT_DATABASE_URL
            )
        ),
        format!(
            "TLS: {}",
            if server.tls_cert.is_some() {
                format!(
                    "cert {}, key {}, client CA {}",
                    shown(&server.tls_cert),
                    shown(&server.tls_key),
                    shown(&server.tls_client_ca)
                )
            } else {
                "off".into()
            }
        ),
        format!(
            "metrics: {}",
            server
                .metrics_listen
                .map_or_else(|| "off".into(), |a| format!("http://{a}/metrics"))
        ),
    ]
}

/// Marks a value nobody set: check-config shows the built-in default.
fn default_note(is_default: bool) -> &'static str {
    if is_default { " (default)" } else { "" }
}

fn http(config: &Config) -> Vec<String> {
    let http = &config.http;
    let sources = &http.key_sources;
    let mut found_in = Vec::new();
    if sources.authorization_header {
        found_in.push(format!(
            "authorization header ({})",
            config.key_format.schemes().join(", ")
        ));
    }
    if let Some(header) = &sources.header {
        found_in.push(format!("header `{header}`"));
    }
    if let Some(parameter) = &sources.query_parameter {
        found_in.push(format!("query parameter `{parameter}`"));
    }
    let identity = http.responses.identity_headers();
    let style = match http.responses.style() {
        ErrorBodyStyle::ErrorObject => "error_object",
        ErrorBodyStyle::ErrorObjectWithDetails => "error_object_with_details",
        ErrorBodyStyle::CodeDetail => "code_detail",
    };
    let mut lines = vec![
        format!(
            "keys read from: {}{}",
            found_in.join(", then "),
            if found_in.len() > 1 {
                " (the first present wins)"
            } else {
                ""
            }
        ),
        format!(
            "credential removed before the request goes upstream: {}",
            if http.strip_credential { "yes" } else { "no" }
        ),
        match http.trusted_proxy_hops {
            0 => "client address: Envoy's peer (trusted_proxy_hops = 0)".into(),
            hops => format!(
                "client address: x-forwarded-for entry {} from the right, after the peer Envoy appends (trusted_proxy_hops = {hops}, as Envoy's xff_num_trusted_hops)",
                hops + 1
            ),
        },
        format!(
            "authorization header without a scheme: {}",
            if http.require_scheme {
                "no key (http.require_scheme = true)"
            } else {
                "read as a bare key"
            }
        ),
        format!("error bodies: {style}"),
        format!(
            "identity headers: key id {}, account id {}, scopes {}",
            identity.key_id, identity.account_id, identity.scopes
        ),
        if http.responses.forwarded_metadata().is_empty() {
            "key metadata forwarded upstream: none (http.forward_metadata)".to_owned()
        } else {
            format!(
                "key metadata forwarded upstream: {}",
                http.responses
                    .forwarded_metadata()
                    .iter()
                    .map(|(name, header)| format!("{name} as {header}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    ];
    let routes = &config.http_route_definitions;
    if routes.is_empty() {
        lines.push("routes: none".into());
    } else {
        lines.push("routes (the first match wins):".into());
        lines.extend(
            routes
                .iter()
                .enumerate()
                .map(|(i, route)| format!("  [{i}] {}", route_line(route))),
        );
    }
    lines.push(match http.unmatched_route {
        UnmatchedRoute::Deny => {
            "unmatched_route = deny: other requests are denied (http.denials.unmatched_route)"
                .into()
        }
        UnmatchedRoute::AnyKey => {
            "unmatched_route = any_key: other requests need any valid key".into()
        }
        UnmatchedRoute::Public => {
            "unmatched_route = public: other requests pass without a key".into()
        }
    });
    lines
}

/// `GET, HEAD /v1/orders/{id}: key with orders:read` and the like.
fn route_line(route: &RouteDefinition) -> String {
    let access = match &route.scopes {
        _ if route.public => "public (no key)".to_owned(),
        None => "any valid key".to_owned(),
        Some(scopes) if scopes.is_empty() => "any valid key".to_owned(),
        Some(scopes) => {
            let templated = scopes.iter().any(|scope| scope.contains('{'));
            format!(
                "key with {}{}",
                scopes.join(", "),
                if templated {
                    " (templates filled in from the request)"
                } else {
                    ""
                }
            )
        }
    };
    format!("{} {}: {access}", route.methods.join(", "), route.path)
}

/// Where the page is, what it calls things and who may frame it.
fn settings_page(config: &Config) -> Vec<String> {
    let page = &config.settings_page;
    if !page.enabled {
        return vec!["not served (settings_page.enabled = false)".into()];
    }
    let mut lines = vec![match config.server.http_listen {
        Some(address) => format!("http://{address}{}", page.path),
        None => format!(
            "{} once the HTTP listener is on (server.http_listen or --http-listen)",
            page.path
        ),
    }];
    lines.push(format!(
        "{:?} for {:?}; name field {:?}; create button {:?}",
        page.title, page.product, page.name_label, page.create_label
    ));
    for (field, label) in &page.toggle_labels {
        lines.push(format!("toggle {field}: {label:?}"));
    }
    for (preset, label) in &page.preset_labels {
        lines.push(format!("preset {preset}: {label:?}"));
    }
    lines.push(if page.frame_ancestors.is_empty() {
        "framed by keyward's own origin only".into()
    } else {
        format!("may be framed by: {}", page.frame_ancestors.join(", "))
    });
    let theme = &page.theme;
    lines.push(format!(
        "theme: text {} on {}, accent {}, font {}",
        theme.text.css(),
        theme.background.css(),
        theme.accent.css(),
        theme.font_family
    ));
    lines
}

/// The served routes, the JSON names and the shape of scopes.
fn management_api(config: &Config) -> Vec<String> {
    let api = &config.management_api;
    let mut lines = vec![match config.server.http_listen {
        Some(address) => format!("listening on {address}"),
        None => "not served (set server.http_listen or --http-listen)".into(),
    }];
    for route in &api.routes {
        lines.push(format!(
            "{} {}: {}",
            route.method,
            route.path,
            route.operation.as_str()
        ));
    }
    let fields = api.fields.shown();
    lines.push(format!("key fields: {}", fields.join(", ")));
    lines.push(format!(
        "scopes as {}",
        match api.scopes_shape {
            crate::management_api::settings::ScopesShape::Names => "a list of names",
            crate::management_api::settings::ScopesShape::Levels => "resource -> level",
        }
    ));
    for toggle in &api.toggles {
        lines.push(format!("{}: true grants {}", toggle.field, toggle.scope));
    }
    if !api.cors_allowed_origins.is_empty() {
        let origins: Vec<&str> = api
            .cors_allowed_origins
            .iter()
            .filter_map(|o| o.to_str().ok())
            .collect();
        lines.push(format!("browsers allowed from: {}", origins.join(", ")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_query_is_not_printed() {
        let mut config = Config::default();
        config.server.database_url = "postgres://kw@db/kw?sslmode=require&password=s3cret"
            .parse()
            .unwrap();
        let text = describe(&config);
        assert!(
            text.contains("database: postgres://kw@db/kw?sslmode=require&password=***"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        // Nor in `Debug`, should a config ever be logged.
        let shown = format!("{config:?}");
        assert!(shown.contains("password=***"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn the_redis_password_is_not_printed() {
        let config = Config::parse(
            "[limits]\nbackend = \"redis\"\nredis_url = \"redis://:s3cret@cache:6379/2\"\n",
            "limits.toml",
        )
        .unwrap();
        let text = describe(&config);
        assert!(
            text.contains("Redis at redis://:***@cache:6379/2"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!format!("{config:?}").contains("s3cret"));
        let error = Config::parse(
            "[limits]\nredis_url = \"redis://:s3cret@cache:port\"\n",
            "limits.toml",
        )
        .unwrap_err();
        assert_eq!(error.key, "limits.redis_url");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn the_default_profile_describes_carboncopy() {
        let text = describe(&Config::default());
        assert!(text.contains("cc_<64 hex characters>"), "{text}");
        assert!(
            text.contains("traders:write  [implies traders:read]"),
            "{text}"
        );
        assert!(text.contains("markets:read  [reserved"), "{text}");
        assert!(text.contains("management RPCs: open"), "{text}");
        assert!(text.contains("routes: none"), "{text}");
        assert!(
            text.contains("unmatched_route = deny: other requests are denied"),
            "{text}"
        );
    }

    #[test]
    fn the_default_is_the_carboncopy_profile_but_for_three_settings() {
        let profile = include_str!("../profiles/carboncopy.toml");
        let shipped = Config::parse(profile, "carboncopy.toml").unwrap();
        assert_eq!(shipped.key_format.schemes(), ["Bearer"]);
        assert!(shipped.http.require_scheme);
        assert_eq!(shipped.http_route_definitions.len(), 9);

        // The profile with the three settings `Config::default` lists taken
        // back is the default, in everything check-config shows and beyond.
        let routes = profile.find("[[http.routes]]").unwrap();
        let edit = |text: &str, from: &str, to: &str| {
            assert!(text.contains(from), "the profile says {from}");
            text.replace(from, to)
        };
        let taken_back = edit(
            &edit(
                &profile[..routes],
                "schemes = [\"Bearer\"]",
                "schemes = [\"Bearer\", \"ApiKey\"]",
            ),
            "require_scheme = true",
            "require_scheme = false",
        );
        let taken_back = Config::parse(&taken_back, "<built-in defaults>").unwrap();
        let default = Config::default();
        assert_eq!(describe(&taken_back), describe(&default));
        assert_eq!(taken_back.key_format, default.key_format);
        assert_eq!(
            taken_back.max_active_keys_per_account,
            default.max_active_keys_per_account
        );
        assert_eq!(
            taken_back.catalog.definitions(),
            default.catalog.definitions()
        );
        assert_eq!(taken_back.denials, default.denials);
        assert_eq!(taken_back.feed, default.feed);
        assert_eq!(taken_back.audit, default.audit);
        assert_eq!(taken_back.bans, default.bans);
        assert_eq!(taken_back.default_rate_limit, default.default_rate_limit);
        assert_eq!(
            taken_back.last_used_flush_interval,
            default.last_used_flush_interval
        );
        assert_eq!(
            format!("{:?}", taken_back.cache),
            format!("{:?}", default.cache)
        );
        assert_eq!(
            format!("{:?}", taken_back.http.responses.identity_headers()),
            format!("{:?}", default.http.responses.identity_headers())
        );
        for denial in crate::denial::PolicyDenial::ALL {
            assert_eq!(
                format!("{:?}", taken_back.http.responses.deny_policy(denial)),
                format!("{:?}", default.http.responses.deny_policy(denial))
            );
        }
    }

    #[test]
    fn routes_are_listed_in_order_with_what_they_need() {
        let config = Config::parse(
            r#"
            [[scopes]]
            name = "read"
            [[scopes]]
            name = "trading"
            [[scopes]]
            name = "read:reports"

            [http]
            authorization_header = true
            key_query_parameter = "api_key"
            error_style = "code_detail"
            trusted_proxy_hops = 1
            unmatched_route = "any_key"
            forward_metadata = ["plan", "region"]

            [[http.routes]]
            methods = ["GET"]
            path = "/v1/health"
            public = true

            [[http.routes]]
            methods = ["POST", "PUT"]
            path = "/v1/orders/{id}"
            scopes = ["trading"]

            [[http.routes]]
            methods = ["GET"]
            path = "/v1/things"
            scopes = ["read:{query.kind}"]

            [[http.routes]]
            methods = ["*"]
            path = "/..."
            scopes = []
            "#,
            "p.toml",
        )
        .unwrap();
        let text = describe(&config);
        for expected in [
            "Envoy ext_authz ([http]):",
            "keys read from: authorization header (Bearer, ApiKey), then query parameter `api_key`",
            "client address: x-forwarded-for entry 2 from the right, after the peer Envoy appends (trusted_proxy_hops = 1, as Envoy's xff_num_trusted_hops)",
            "authorization header without a scheme: read as a bare key",
            "error bodies: code_detail",
            "identity headers: key id x-keyward-key-id, account id x-keyward-account-id, scopes x-keyward-scopes",
            "key metadata forwarded upstream: plan as x-keyward-meta-plan, region as x-keyward-meta-region",
            "routes (the first match wins):\n    [0] GET /v1/health: public (no key)\n    [1] POST, PUT /v1/orders/{id}: key with trading\n    [2] GET /v1/things: key with read:{query.kind} (templates filled in from the request)\n    [3] * /...: any valid key\n",
            "unmatched_route = any_key",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
