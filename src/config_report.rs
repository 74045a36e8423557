//! `keyward check-config FILE`: what a validated profile means, in plain
//! text, without starting anything. The report is a list of sections, each
//! a function from the config to its lines ([`SECTIONS`]); a new part of the
//! config (such as `[http]` routes) adds one function and one entry.

use std::fmt::Write as _;

use crate::config::{Config, DEFAULT_DATABASE_URL, DEFAULT_LISTEN};
use crate::denial::DenialText;

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
    // The `[http]` routes section goes here once routes exist.
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
    vec![
        format!(
            "{}<{} {} characters>  ({:.0} bits of randomness)",
            format.prefix(),
            format.body_length(),
            format.alphabet().name(),
            format.body_length() as f64 * format.alphabet().bits_per_symbol()
        ),
        format!(
            "accepted as: {} <key>, or the bare key",
            format.schemes().join(" <key>, ")
        ),
    ]
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
    ]
}

fn limits(config: &Config) -> Vec<String> {
    vec![
        format!(
            "at most {} active keys per account",
            config.max_active_keys_per_account
        ),
        match config.default_rate_limit {
            Some(limit) => format!(
                "default rate limit: {} requests per {} s per key (per replica)",
                limit.requests(),
                limit.per_seconds()
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
            "service token {:?}: {}",
            token.name,
            token
                .rpcs
                .iter()
                .map(|rpc| rpc.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(jwt) = &auth.jwt {
        lines.push(format!(
            "user JWTs: {} for the account in claim `{}`; iss {}; aud {}; algorithms {:?}; leeway {} s; {} key(s) from {}",
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
            jwt.keys.len(),
            jwt.keys
                .iter()
                .map(|key| key.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    lines.push(if auth.hot_path_requires_token {
        "hot-path RPCs (Authenticate, CheckScope, WatchRevocations, Check): service token required"
            .into()
    } else {
        "hot-path RPCs (Authenticate, CheckScope, WatchRevocations, Check): open".into()
    });
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
            "listen: {}",
            server
                .listen
                .map_or_else(|| format!("{DEFAULT_LISTEN} (default)"), |a| a.to_string())
        ),
        format!(
            "database: {}",
            server
                .database_url
                .as_deref()
                .map_or_else(|| format!("{DEFAULT_DATABASE_URL} (default)"), redact_url)
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

/// A database URL without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact_url("postgres://kw:s3cret@db:5432/kw"),
            "postgres://kw:***@db:5432/kw"
        );
        assert_eq!(redact_url("sqlite://keyward.db"), "sqlite://keyward.db");
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
    }
}
