//! `[http]`: validates the Envoy ext_authz settings (where keys are read,
//! error body style, identity headers, unmatched routes, proxy hops, the
//! route policy) into [`ExtAuthzSettings`], compiling routes and rendering the
//! fixed parts of responses once.

use std::sync::Arc;

use super::raw::RawHttp;
use super::{ConfigError, denial_text};
use crate::denial::{DenialCatalog, DenialText};
use crate::ext_authz::response::ResponseSettings;
use crate::ext_authz::{
    ErrorBodyStyle, IdentityHeaders, KeySources, Responses, RouteDefinition, RoutePolicy,
    UnmatchedRoute,
};
use crate::key_format::KeyFormat;
use crate::scope_catalog::ScopeCatalog;

/// The most `x-forwarded-for` hops anyone plausibly trusts.
const MAX_TRUSTED_PROXY_HOPS: u32 = 10;
const MAX_HEADER_NAME_BYTES: usize = 64;
const MAX_WWW_AUTHENTICATE_BYTES: usize = 256;
const MAX_ROUTES: usize = 1_000;

/// Headers a config may not claim: pseudo-headers and hop-by-hop or
/// routing headers that Envoy manages or that would break the request.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "x-forwarded-for",
    "cookie",
];

/// Validated `[http]`.
#[derive(Debug, Clone)]
pub struct ExtAuthzSettings {
    pub key_sources: KeySources,
    /// The authorization header must carry one of `keys.schemes` before the
    /// key (`Bearer cc_...`); a bare key there counts as no key.
    pub require_scheme: bool,
    /// Remove the credential before the request goes upstream.
    pub strip_credential: bool,
    pub unmatched_route: UnmatchedRoute,
    /// Counted like Envoy's `xff_num_trusted_hops` (the same number): 0,
    /// the client is Envoy's peer; N, the (N+1)-th `x-forwarded-for` entry
    /// from the right (Envoy has appended its peer).
    pub trusted_proxy_hops: u32,
    pub routes: Arc<RoutePolicy>,
    pub responses: Arc<Responses>,
}

impl ExtAuthzSettings {
    pub(super) fn from_raw(
        raw: RawHttp,
        file: &str,
        key_format: &KeyFormat,
        catalog: &ScopeCatalog,
        denials: &DenialCatalog,
    ) -> Result<Self, ConfigError> {
        let fail = |key: String, reason: String| ConfigError {
            file: file.to_owned(),
            key,
            reason,
        };

        let key_header = raw
            .key_header
            .map(|name| header_name(&name).map_err(|r| fail("http.key_header".into(), r)))
            .transpose()?;
        if key_header.as_deref() == Some("authorization") {
            return Err(fail(
                "http.key_header".into(),
                "use `authorization_header = true` for the authorization header; key_header is for a header holding the bare key, like \"x-api-key\"".into(),
            ));
        }
        let key_query_parameter = raw
            .key_query_parameter
            .map(|name| {
                query_parameter_name(&name).map_err(|r| fail("http.key_query_parameter".into(), r))
            })
            .transpose()?;
        let key_sources = KeySources {
            authorization_header: raw.authorization_header.unwrap_or(true),
            header: key_header,
            query_parameter: key_query_parameter,
        };
        if !key_sources.authorization_header
            && key_sources.header.is_none()
            && key_sources.query_parameter.is_none()
        {
            return Err(fail(
                "http.authorization_header".into(),
                "no key source is left: keep the authorization header, or set key_header or key_query_parameter".into(),
            ));
        }

        let require_scheme = raw.require_scheme.unwrap_or(false);
        if require_scheme && (!key_sources.authorization_header || key_format.schemes().is_empty())
        {
            return Err(fail(
                "http.require_scheme".into(),
                "needs the authorization header as a key source and at least one of keys.schemes"
                    .into(),
            ));
        }

        let style_name = raw.error_style.as_deref().unwrap_or("error_object");
        let style = ErrorBodyStyle::parse(style_name).ok_or_else(|| {
            fail(
                "http.error_style".into(),
                format!("{style_name:?} is not one of: {}", ErrorBodyStyle::NAMES),
            )
        })?;

        let defaults = IdentityHeaders::default();
        let identity_header = |field: &str, value: Option<String>, default: String| {
            let key = format!("http.identity_headers.{field}");
            match value {
                None => Ok(default),
                Some(name) => header_name(&name).map_err(|r| fail(key, r)),
            }
        };
        let identity = IdentityHeaders {
            key_id: identity_header("key_id", raw.identity_headers.key_id, defaults.key_id)?,
            account_id: identity_header(
                "account_id",
                raw.identity_headers.account_id,
                defaults.account_id,
            )?,
            scopes: identity_header("scopes", raw.identity_headers.scopes, defaults.scopes)?,
        };
        let identity_names = [
            ("key_id", &identity.key_id),
            ("account_id", &identity.account_id),
            ("scopes", &identity.scopes),
        ];
        for (i, (field, name)) in identity_names.iter().enumerate() {
            let clashes_with_identity = identity_names[..i].iter().any(|(_, other)| other == name);
            let clashes_with_key =
                *name == "authorization" || key_sources.header.as_deref() == Some(name.as_str());
            if clashes_with_identity || clashes_with_key {
                return Err(fail(
                    format!("http.identity_headers.{field}"),
                    format!(
                        "{name:?} is already used by another identity header or as a key source"
                    ),
                ));
            }
        }

        let unmatched_name = raw.unmatched_route.as_deref().unwrap_or("deny");
        let unmatched_route = UnmatchedRoute::parse(unmatched_name).ok_or_else(|| {
            fail(
                "http.unmatched_route".into(),
                format!(
                    "{unmatched_name:?} is not one of: {}",
                    UnmatchedRoute::NAMES
                ),
            )
        })?;

        let trusted_proxy_hops = raw.trusted_proxy_hops.unwrap_or(0);
        if trusted_proxy_hops > MAX_TRUSTED_PROXY_HOPS {
            return Err(fail(
                "http.trusted_proxy_hops".into(),
                format!("must be between 0 and {MAX_TRUSTED_PROXY_HOPS}, got {trusted_proxy_hops}"),
            ));
        }

        let www_authenticate = match raw.www_authenticate {
            // Default: the first scheme the product accepts, e.g. `Bearer`.
            None => key_format.schemes().first().cloned(),
            Some(value) if value.is_empty() => None,
            Some(value) => {
                let visible = value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
                if !visible || value.len() > MAX_WWW_AUTHENTICATE_BYTES || value.starts_with(' ') {
                    return Err(fail(
                        "http.www_authenticate".into(),
                        format!(
                            "must be a challenge like `Bearer realm=\"api\"`: at most {MAX_WWW_AUTHENTICATE_BYTES} visible ASCII characters (\"\" to send none)"
                        ),
                    ));
                }
                Some(value)
            }
        };

        let unmatched_route_denial = denial_text(
            raw.denials.unmatched_route,
            DenialText::new("not_found", "No such endpoint.", 404),
            &[403, 404],
        )
        .map_err(|(field, r)| fail(format!("http.denials.unmatched_route.{field}"), r))?;
        let malformed_request_denial = denial_text(
            raw.denials.malformed_request,
            DenialText::new("bad_request", "The request could not be read.", 400),
            &[400, 403, 404],
        )
        .map_err(|(field, r)| fail(format!("http.denials.malformed_request.{field}"), r))?;

        if raw.routes.len() > MAX_ROUTES {
            return Err(fail(
                "http.routes".into(),
                format!("at most {MAX_ROUTES} routes, got {}", raw.routes.len()),
            ));
        }
        let definitions = raw
            .routes
            .into_iter()
            .map(|route| RouteDefinition {
                methods: route.methods,
                path: route.path,
                scopes: route.scopes,
                public: route.public,
            })
            .collect();
        let routes = RoutePolicy::compile(definitions, catalog).map_err(|(i, error)| {
            let key = match error.field {
                "" => format!("http.routes[{i}]"),
                field => format!("http.routes[{i}].{field}"),
            };
            fail(key, error.reason)
        })?;

        let responses = Responses::new(
            ResponseSettings {
                style,
                identity,
                dynamic_metadata: raw.dynamic_metadata.unwrap_or(true),
                www_authenticate,
                unmatched_route: unmatched_route_denial,
                malformed_request: malformed_request_denial,
            },
            denials,
            catalog,
        );
        Ok(Self {
            key_sources,
            require_scheme,
            strip_credential: raw.strip_credential.unwrap_or(true),
            unmatched_route,
            trusted_proxy_hops,
            routes: Arc::new(routes),
            responses: Arc::new(responses),
        })
    }
}

/// A header name as Envoy sends it: lower case token characters.
fn header_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_HEADER_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(format!(
            "{name:?} must be a lower-case header name of 1 to {MAX_HEADER_NAME_BYTES} a-z 0-9 - _ (Envoy sends header names in lower case)"
        ));
    }
    if RESERVED_HEADERS.contains(&name) || name.starts_with("x-envoy-") {
        return Err(format!(
            "{name:?} is a header Envoy or HTTP itself manages; choose another name"
        ));
    }
    Ok(name.to_owned())
}

fn query_parameter_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(format!(
            "{name:?} must be 1 to 64 of A-Z a-z 0-9 _ - . (matched exactly as written in the request, not decoded)"
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests;
