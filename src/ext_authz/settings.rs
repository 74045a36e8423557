//! `[http]`: the Envoy ext_authz table as written, and its validation into
//! [`ExtAuthzSettings`] (where keys are read, error body style, identity
//! headers, unmatched routes, proxy hops, the route policy), compiling
//! routes and rendering the fixed parts of responses once.

use std::sync::Arc;

use serde::Deserialize;

use super::response::ResponseSettings;
use super::{
    ErrorBodyStyle, IdentityHeaders, KeySources, Responses, RouteDefinition, RoutePolicy,
    UnmatchedRoute,
};
use crate::denial::{DenialCatalog, DenialText, RawDenialText, denial_text_from_raw};
use crate::key_format::KeyFormat;
use crate::key_metadata;
use crate::scope_catalog::ScopeCatalog;
use crate::settings::SettingError;

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

pub const DEFAULT_AUTHORIZATION_HEADER: bool = true;
pub const DEFAULT_REQUIRE_SCHEME: bool = false;
pub const DEFAULT_ERROR_STYLE: ErrorBodyStyle = ErrorBodyStyle::ErrorObject;
pub const DEFAULT_STRIP_CREDENTIAL: bool = true;
pub const DEFAULT_DYNAMIC_METADATA: bool = true;
pub const DEFAULT_UNMATCHED_ROUTE: UnmatchedRoute = UnmatchedRoute::Deny;
pub const DEFAULT_TRUSTED_PROXY_HOPS: u32 = 0;
/// The request header a caller puts a write's revision in, so that Envoy's
/// answer already reflects that write (read-your-writes).
pub const DEFAULT_MIN_REVISION_HEADER: &str = "x-keyward-min-revision";

/// `http.denials.unmatched_route` when the file does not change it.
pub fn default_unmatched_route_denial() -> DenialText {
    DenialText::new("not_found", "No such endpoint.", 404)
}

/// `http.denials.malformed_request` when the file does not change it.
pub fn default_malformed_request_denial() -> DenialText {
    DenialText::new("bad_request", "The request could not be read.", 400)
}

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub authorization_header: Option<bool>,
    pub require_scheme: Option<bool>,
    pub key_header: Option<String>,
    pub key_query_parameter: Option<String>,
    pub error_style: Option<String>,
    pub identity_headers: RawIdentityHeaders,
    pub strip_credential: Option<bool>,
    pub dynamic_metadata: Option<bool>,
    pub unmatched_route: Option<String>,
    pub trusted_proxy_hops: Option<u32>,
    pub min_revision_header: Option<String>,
    pub www_authenticate: Option<String>,
    pub denials: RawHttpDenials,
    pub routes: Vec<RawRoute>,
    /// Metadata names forwarded upstream as `x-keyward-meta-<name>`.
    pub forward_metadata: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentityHeaders {
    pub key_id: Option<String>,
    pub account_id: Option<String>,
    pub scopes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpDenials {
    pub unmatched_route: Option<RawDenialText>,
    pub malformed_request: Option<RawDenialText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub methods: Vec<String>,
    pub path: String,
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub public: bool,
}

impl RawRoute {
    fn definition(&self) -> RouteDefinition {
        RouteDefinition {
            methods: self.methods.clone(),
            path: self.path.clone(),
            scopes: self.scopes.clone(),
            public: self.public,
        }
    }
}

impl RawHttp {
    /// The `[[http.routes]]` entries as written, in order (for
    /// `check-config`; the compiled policy keeps only what matching needs).
    pub fn route_definitions(&self) -> Arc<[RouteDefinition]> {
        self.routes.iter().map(RawRoute::definition).collect()
    }
}

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
    /// Where a request names the revision the answer must reflect (`None`:
    /// nowhere).
    pub min_revision_header: Option<String>,
    pub routes: Arc<RoutePolicy>,
    pub responses: Arc<Responses>,
}

impl ExtAuthzSettings {
    /// Validates `[http]`; scopes, schemes and denial texts come from the
    /// tables already validated.
    pub fn from_raw(
        raw: RawHttp,
        key_format: &KeyFormat,
        catalog: &ScopeCatalog,
        denials: &DenialCatalog,
    ) -> Result<Self, SettingError> {
        let key_sources = key_sources(&raw)?;
        let require_scheme = raw.require_scheme.unwrap_or(DEFAULT_REQUIRE_SCHEME);
        if require_scheme && (!key_sources.authorization_header || key_format.schemes().is_empty())
        {
            return Err(SettingError::new(
                "http.require_scheme",
                "needs the authorization header as a key source and at least one of keys.schemes",
            ));
        }
        let style = match raw.error_style.as_deref() {
            None => DEFAULT_ERROR_STYLE,
            Some(name) => ErrorBodyStyle::parse(name).ok_or_else(|| {
                SettingError::new(
                    "http.error_style",
                    format!("{name:?} is not one of: {}", ErrorBodyStyle::NAMES),
                )
            })?,
        };
        let identity = identity_headers(raw.identity_headers, &key_sources)?;
        let unmatched_route = match raw.unmatched_route.as_deref() {
            None => DEFAULT_UNMATCHED_ROUTE,
            Some(name) => UnmatchedRoute::parse(name).ok_or_else(|| {
                SettingError::new(
                    "http.unmatched_route",
                    format!("{name:?} is not one of: {}", UnmatchedRoute::NAMES),
                )
            })?,
        };
        let trusted_proxy_hops = raw.trusted_proxy_hops.unwrap_or(DEFAULT_TRUSTED_PROXY_HOPS);
        if trusted_proxy_hops > MAX_TRUSTED_PROXY_HOPS {
            return Err(SettingError::new(
                "http.trusted_proxy_hops",
                format!("must be between 0 and {MAX_TRUSTED_PROXY_HOPS}, got {trusted_proxy_hops}"),
            ));
        }
        let min_revision_header = match raw.min_revision_header.as_deref() {
            None => Some(DEFAULT_MIN_REVISION_HEADER.to_owned()),
            Some("") => None,
            Some(name) => {
                Some(header_name(name).map_err(SettingError::at("http.min_revision_header"))?)
            }
        };
        let www_authenticate = www_authenticate(raw.www_authenticate, key_format)?;
        let unmatched_route_denial = denial_text_from_raw(
            "http.denials.unmatched_route",
            raw.denials.unmatched_route,
            default_unmatched_route_denial(),
            &[403, 404],
        )?;
        let malformed_request_denial = denial_text_from_raw(
            "http.denials.malformed_request",
            raw.denials.malformed_request,
            default_malformed_request_denial(),
            &[400, 403, 404],
        )?;
        let routes = route_policy(&raw.routes, catalog)?;
        let responses = Responses::new(
            ResponseSettings {
                style,
                identity,
                dynamic_metadata: raw.dynamic_metadata.unwrap_or(DEFAULT_DYNAMIC_METADATA),
                www_authenticate,
                unmatched_route: unmatched_route_denial,
                malformed_request: malformed_request_denial,
                forward_metadata: forward_metadata(&raw.forward_metadata)?,
            },
            denials,
            catalog,
        );
        Ok(Self {
            key_sources,
            require_scheme,
            strip_credential: raw.strip_credential.unwrap_or(DEFAULT_STRIP_CREDENTIAL),
            unmatched_route,
            trusted_proxy_hops,
            min_revision_header,
            routes: Arc::new(routes),
            responses: Arc::new(responses),
        })
    }
}

/// `http.forward_metadata`: metadata names as keys hold them, each once.
fn forward_metadata(names: &[String]) -> Result<Vec<String>, SettingError> {
    for (i, name) in names.iter().enumerate() {
        let key = format!("http.forward_metadata[{i}]");
        key_metadata::check_name(name).map_err(|reason| SettingError::new(key.as_str(), reason))?;
        if names[..i].contains(name) {
            return Err(SettingError::new(key, format!("{name:?} is listed twice")));
        }
    }
    Ok(names.to_vec())
}

/// Where keys are read: the authorization header, a named header, a query
/// parameter; at least one.
fn key_sources(raw: &RawHttp) -> Result<KeySources, SettingError> {
    let header = raw
        .key_header
        .as_deref()
        .map(|name| header_name(name).map_err(SettingError::at("http.key_header")))
        .transpose()?;
    if header.as_deref() == Some("authorization") {
        return Err(SettingError::new(
            "http.key_header",
            "use `authorization_header = true` for the authorization header; key_header is for a header holding the bare key, like \"x-api-key\"",
        ));
    }
    let query_parameter = raw
        .key_query_parameter
        .as_deref()
        .map(|name| {
            query_parameter_name(name).map_err(SettingError::at("http.key_query_parameter"))
        })
        .transpose()?;
    let sources = KeySources {
        authorization_header: raw
            .authorization_header
            .unwrap_or(DEFAULT_AUTHORIZATION_HEADER),
        header,
        query_parameter,
    };
    if !sources.authorization_header
        && sources.header.is_none()
        && sources.query_parameter.is_none()
    {
        return Err(SettingError::new(
            "http.authorization_header",
            "no key source is left: keep the authorization header, or set key_header or key_query_parameter",
        ));
    }
    Ok(sources)
}

/// The identity headers, each distinct and none a key source.
fn identity_headers(
    raw: RawIdentityHeaders,
    key_sources: &KeySources,
) -> Result<IdentityHeaders, SettingError> {
    let defaults = IdentityHeaders::default();
    let named = |field: &str, value: Option<String>, default: String| match value {
        None => Ok(default),
        Some(name) => {
            header_name(&name).map_err(SettingError::at(&format!("http.identity_headers.{field}")))
        }
    };
    let identity = IdentityHeaders {
        key_id: named("key_id", raw.key_id, defaults.key_id)?,
        account_id: named("account_id", raw.account_id, defaults.account_id)?,
        scopes: named("scopes", raw.scopes, defaults.scopes)?,
    };
    let names = [
        ("key_id", &identity.key_id),
        ("account_id", &identity.account_id),
        ("scopes", &identity.scopes),
    ];
    for (i, (field, name)) in names.iter().enumerate() {
        let clashes_with_identity = names[..i].iter().any(|(_, other)| other == name);
        let clashes_with_key =
            *name == "authorization" || key_sources.header.as_deref() == Some(name.as_str());
        if clashes_with_identity || clashes_with_key {
            return Err(SettingError::new(
                format!("http.identity_headers.{field}"),
                format!("{name:?} is already used by another identity header or as a key source"),
            ));
        }
    }
    Ok(identity)
}

/// The challenge of 401 answers; by default the first scheme the product
/// accepts (`Bearer`), and `""` for none.
fn www_authenticate(
    value: Option<String>,
    key_format: &KeyFormat,
) -> Result<Option<String>, SettingError> {
    match value {
        None => Ok(key_format.schemes().first().cloned()),
        Some(value) if value.is_empty() => Ok(None),
        Some(value) => {
            let visible = value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
            if !visible || value.len() > MAX_WWW_AUTHENTICATE_BYTES || value.starts_with(' ') {
                return Err(SettingError::new(
                    "http.www_authenticate",
                    format!(
                        "must be a challenge like `Bearer realm=\"api\"`: at most {MAX_WWW_AUTHENTICATE_BYTES} visible ASCII characters (\"\" to send none)"
                    ),
                ));
            }
            Ok(Some(value))
        }
    }
}

fn route_policy(routes: &[RawRoute], catalog: &ScopeCatalog) -> Result<RoutePolicy, SettingError> {
    if routes.len() > MAX_ROUTES {
        return Err(SettingError::new(
            "http.routes",
            format!("at most {MAX_ROUTES} routes, got {}", routes.len()),
        ));
    }
    let definitions = routes.iter().map(RawRoute::definition).collect();
    RoutePolicy::compile(definitions, catalog).map_err(|(i, error)| {
        let key = match error.field {
            "" => format!("http.routes[{i}]"),
            field => format!("http.routes[{i}].{field}"),
        };
        SettingError::new(key, error.reason)
    })
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
