//! Building ext_authz answers: the OK response (identity headers and
//! metadata for the upstream, credential and spoofed-header removal,
//! rate-limit headers for the client) and the denied response (status,
//! JSON body in the product's error style, `www-authenticate`,
//! `retry-after`).
//!
//! Everything that does not depend on the request is rendered once, when the
//! config is loaded: the JSON body of every denial text and of every scope's
//! insufficient-scope denial, and the header names. A request then copies
//! strings; it formats only numbers and the rare unknown templated scope.

use crate::denial::PolicyDenial;
use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use serde::Serialize;

use super::check_reply::{AllowedAnswer, CheckReply};
use crate::denial::{Denial, DenialCatalog, DenialText, Reason};
use crate::key_cache::CachedKey;
use crate::rate_limits::RateLimitStatus;
use crate::scope_catalog::ScopeCatalog;

/// The prefix of the headers that carry a key's metadata upstream
/// (`http.forward_metadata`).
pub const METADATA_HEADER_PREFIX: &str = "x-keyward-meta-";

/// The JSON shape of a denied response's body, as the products document them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBodyStyle {
    /// `{"error":{"code":"...","message":"..."}}` (Carboncopy).
    ErrorObject,
    /// `{"error":{"code","message","details":{"required_scope"}}}` (the trading
    /// journal);
    /// `details` only on insufficient-scope denials.
    ErrorObjectWithDetails,
    /// `{"code":"...","detail":"..."}` (CSBoard).
    CodeDetail,
}

impl ErrorBodyStyle {
    pub const NAMES: &'static str = "error_object, error_object_with_details, code_detail";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "error_object" => Some(Self::ErrorObject),
            "error_object_with_details" => Some(Self::ErrorObjectWithDetails),
            "code_detail" => Some(Self::CodeDetail),
            _ => None,
        }
    }

    /// The body for a code, a message and (for insufficient scope) the
    /// scope that was missing. Every string is JSON-escaped by serde_json.
    pub fn render(self, code: &str, message: &str, required_scope: Option<&str>) -> String {
        #[derive(Serialize)]
        struct Details<'a> {
            required_scope: &'a str,
        }
        #[derive(Serialize)]
        struct Error<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<Details<'a>>,
        }
        #[derive(Serialize)]
        struct ErrorObject<'a> {
            error: Error<'a>,
        }
        #[derive(Serialize)]
        struct CodeDetail<'a> {
            code: &'a str,
            detail: &'a str,
        }
        let rendered = match self {
            Self::ErrorObject => serde_json::to_string(&ErrorObject {
                error: Error {
                    code,
                    message,
                    details: None,
                },
            }),
            Self::ErrorObjectWithDetails => serde_json::to_string(&ErrorObject {
                error: Error {
                    code,
                    message,
                    details: required_scope.map(|required_scope| Details { required_scope }),
                },
            }),
            Self::CodeDetail => serde_json::to_string(&CodeDetail {
                code,
                detail: message,
            }),
        };
        rendered.expect("serializing strings to JSON cannot fail")
    }
}

/// Header names and fixed values of the responses, validated by the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub key_id: String,
    pub account_id: String,
    pub scopes: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            key_id: "x-keyward-key-id".into(),
            account_id: "x-keyward-account-id".into(),
            scopes: "x-keyward-scopes".into(),
        }
    }
}

/// Where a credential was found, so that an allowed request can drop it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CredentialRemoval {
    /// Request headers to remove before the request goes upstream.
    pub headers: Vec<String>,
    /// Query parameters to remove (names exactly as the request has them).
    pub query_parameters: Vec<String>,
}

/// Builds every CheckResponse keyward sends. Created once per config.
#[derive(Debug)]
pub struct Responses {
    style: ErrorBodyStyle,
    identity: IdentityHeaders,
    /// Also hand the identity to later Envoy filters as dynamic metadata.
    dynamic_metadata: bool,
    www_authenticate: Option<String>,
    /// Body per [`Reason`], by position in [`Reason::ALL`].
    reason_bodies: Vec<String>,
    /// Insufficient-scope body per catalog scope (its own denial text when
    /// it has one, and its name as `required_scope` in the details style).
    scope_bodies: HashMap<String, String>,
    unmatched_route: (DenialText, String),
    malformed_request: (DenialText, String),
    /// `http.forward_metadata`: (metadata name, its `x-keyward-meta-<name>`
    /// header), built once.
    forward_metadata: Vec<(String, String)>,
}

const CONTENT_TYPE_JSON: &str = "application/json";

/// The validated `[http]` values that shape responses.
#[derive(Debug, Clone)]
pub struct ResponseSettings {
    pub style: ErrorBodyStyle,
    pub identity: IdentityHeaders,
    pub dynamic_metadata: bool,
    /// The challenge on 401s; `None` sends none.
    pub www_authenticate: Option<String>,
    pub unmatched_route: DenialText,
    pub malformed_request: DenialText,
    /// Metadata names (validated) forwarded as `x-keyward-meta-<name>`.
    pub forward_metadata: Vec<String>,
}

impl Responses {
    /// Renders every fixed body once, from the settings, the product's
    /// denial texts and its scope catalog.
    pub fn new(
        settings: ResponseSettings,
        denials: &DenialCatalog,
        catalog: &ScopeCatalog,
    ) -> Self {
        let ResponseSettings {
            style,
            identity,
            dynamic_metadata,
            www_authenticate,
            unmatched_route,
            malformed_request,
            forward_metadata,
        } = settings;
        let reason_bodies = Reason::ALL
            .iter()
            .map(|&reason| {
                let text = denials.text(reason);
                style.render(&text.code, &text.message, None)
            })
            .collect();
        let scope_bodies = catalog
            .definitions()
            .iter()
            .map(|scope| {
                let (code, message) = match &scope.denial {
                    Some(own) => (own.code.as_str(), own.message.as_str()),
                    None => (
                        &*denials.insufficient_scope.code,
                        &*denials.insufficient_scope.message,
                    ),
                };
                let body = style.render(code, message, Some(&scope.name));
                (scope.name.clone(), body)
            })
            .collect();
        let render = |text: DenialText| {
            let body = style.render(&text.code, &text.message, None);
            (text, body)
        };
        Self {
            style,
            identity,
            dynamic_metadata,
            www_authenticate,
            reason_bodies,
            scope_bodies,
            unmatched_route: render(unmatched_route),
            malformed_request: render(malformed_request),
            forward_metadata: forward_metadata
                .into_iter()
                .map(|name| {
                    let header = format!("{METADATA_HEADER_PREFIX}{name}");
                    (name, header)
                })
                .collect(),
        }
    }

    pub fn style(&self) -> ErrorBodyStyle {
        self.style
    }

    pub fn identity_headers(&self) -> &IdentityHeaders {
        &self.identity
    }

    /// `http.forward_metadata`: each name with the header it goes upstream as.
    pub fn forwarded_metadata(&self) -> &[(String, String)] {
        &self.forward_metadata
    }

    /// Allowed with a key: identity headers set (overwriting whatever the
    /// client sent under those names), the same values as dynamic metadata
    /// (strings; the scopes space-separated as in the header, which costs a
    /// third less to encode and decode than a list), the credential removed,
    /// rate-limit headers for the client.
    pub fn allow(
        &self,
        key: &CachedKey,
        catalog: &ScopeCatalog,
        rate_limit: Option<RateLimitStatus>,
        credential: CredentialRemoval,
    ) -> CheckReply {
        self.allow_with_quota(key, catalog, rate_limit, None, credential)
    }

    /// [`Responses::allow`], with `x-quota-remaining` for the client when
    /// the key has a usage quota. Encoded directly from the key's strings
    /// (see `check_reply`), the hot path's answer.
    pub fn allow_with_quota(
        &self,
        key: &CachedKey,
        catalog: &ScopeCatalog,
        rate_limit: Option<RateLimitStatus>,
        quota_remaining: Option<u64>,
        credential: CredentialRemoval,
    ) -> CheckReply {
        let forwarded = self
            .forward_metadata
            .iter()
            .filter_map(|(name, header)| Some((header.as_str(), key.metadata_value(name)?)));
        let mut headers_to_remove = credential.headers;
        for (header_name, _) in forwarded.clone() {
            // Overwritten rather than removed: Envoy may apply removals
            // after additions.
            headers_to_remove.retain(|spoofed| spoofed != header_name);
        }
        AllowedAnswer {
            identity: [
                &self.identity.key_id,
                &self.identity.account_id,
                &self.identity.scopes,
            ],
            key_id: key.id(),
            account_id: key.account_id(),
            scopes: || catalog.names(key.effective),
            forwarded,
            headers_to_remove: &headers_to_remove,
            query_parameters_to_remove: &credential.query_parameters,
            rate_limit: rate_limit.map(rate_limit_numbers),
            quota_remaining,
            dynamic_metadata: self.dynamic_metadata,
        }
        .encode()
    }

    /// Allowed without a key (a public route): identity headers the client
    /// sent are removed, so the upstream can trust that they come from
    /// keyward; `strip` removes what looked like a keyward key.
    pub fn allow_public(&self, strip: CredentialRemoval) -> CheckResponse {
        let mut headers_to_remove = Vec::with_capacity(3 + strip.headers.len());
        headers_to_remove.extend([
            self.identity.key_id.clone(),
            self.identity.account_id.clone(),
            self.identity.scopes.clone(),
        ]);
        headers_to_remove.extend(strip.headers);
        ok_response(OkHttpResponse {
            headers_to_remove,
            query_parameters_to_remove: strip.query_parameters,
            ..Default::default()
        })
    }

    /// A denial decided by the hot path; `rate_limit` adds the
    /// `x-ratelimit-*` headers (a 429 carries them).
    pub fn deny(&self, denial: &Denial, rate_limit: Option<RateLimitStatus>) -> CheckResponse {
        self.deny_with_quota(denial, rate_limit, None)
    }

    /// [`Responses::deny`], with `x-quota-remaining` when the key has a
    /// usage quota (0 on QUOTA_EXCEEDED, which also carries `retry-after`
    /// until the next refill, unless the quota never refills).
    pub fn deny_with_quota(
        &self,
        denial: &Denial,
        rate_limit: Option<RateLimitStatus>,
        quota_remaining: Option<u64>,
    ) -> CheckResponse {
        let body = match (&denial.required_scope, denial.reason) {
            (Some(scope), Reason::InsufficientScope) => match self.scope_bodies.get(scope) {
                Some(body) => body.clone(),
                None => self
                    .style
                    .render(&denial.code, &denial.message, Some(scope)),
            },
            (_, reason) => self.reason_bodies[reason_position(reason)].clone(),
        };
        let mut headers = self.denial_headers(denial.http_status);
        let retry_after = match denial.reason {
            Reason::RateLimited | Reason::TooManyFailedAttempts => true,
            Reason::QuotaExceeded => denial.retry_after_ms > 0,
            _ => false,
        };
        if retry_after {
            headers.push(header_with(
                "retry-after",
                whole_seconds_rounded_up(denial.retry_after_ms).to_string(),
            ));
        }
        if let Some(status) = rate_limit {
            headers.extend(rate_limit_headers(status));
        }
        if let Some(remaining) = quota_remaining {
            headers.push(quota_header(remaining));
        }
        denied_response(denial.http_status, headers, body, denial.reason.as_str())
    }

    /// A denial decided by the route policy.
    pub fn deny_policy(&self, denial: PolicyDenial) -> CheckResponse {
        let (text, body) = match denial {
            PolicyDenial::UnmatchedRoute => &self.unmatched_route,
            PolicyDenial::MalformedRequest => &self.malformed_request,
        };
        denied_response(
            text.http_status,
            self.denial_headers(text.http_status),
            body.clone(),
            denial.as_str(),
        )
    }

    fn denial_headers(&self, http_status: u16) -> Vec<HeaderValueOption> {
        let mut headers = Vec::with_capacity(6);
        headers.push(header("content-type", CONTENT_TYPE_JSON));
        if http_status == 401
            && let Some(challenge) = &self.www_authenticate
        {
            headers.push(header("www-authenticate", challenge));
        }
        headers
    }
}

fn reason_position(reason: Reason) -> usize {
    Reason::ALL
        .iter()
        .position(|&known| known == reason)
        .expect("Reason::ALL lists every reason")
}

/// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`.
fn rate_limit_headers(status: RateLimitStatus) -> [HeaderValueOption; 3] {
    let [limit, remaining, reset] = rate_limit_numbers(status);
    [
        header_with("x-ratelimit-limit", limit.to_string()),
        header_with("x-ratelimit-remaining", remaining.to_string()),
        header_with("x-ratelimit-reset", reset.to_string()),
    ]
}

/// The rate-limit headers' values: the limit, what remains, and the
/// seconds until the full budget is back (rounded up).
fn rate_limit_numbers(status: RateLimitStatus) -> [u64; 3] {
    [
        u64::from(status.limit),
        u64::from(status.remaining),
        whole_seconds_rounded_up(u64::try_from(status.reset.as_millis()).unwrap_or(u64::MAX)),
    ]
}

/// `x-quota-remaining`: what is left of the key's usage quota.
fn quota_header(remaining: u64) -> HeaderValueOption {
    header_with("x-quota-remaining", remaining.to_string())
}

/// Seconds for `retry-after` and `x-ratelimit-reset`: rounded up, so a
/// client that waits that long is never early; at least 1 for a wait.
pub fn whole_seconds_rounded_up(millis: u64) -> u64 {
    millis.div_ceil(1000)
}

/// A header that replaces any header of that name, so a client's spoofed
/// identity header cannot survive next to keyward's. For ext_authz answers
/// Envoy documents an unset `append` as overwrite, and older releases read
/// only `append` for these headers; recent releases read `append_action`
/// when `append` is unset, and its zero value, `APPEND_IF_EXISTS_OR_ADD`,
/// would append. Setting `append_action` explicitly and leaving `append`
/// unset overwrites on both.
fn header(name: &str, value: &str) -> HeaderValueOption {
    header_with(name, value.to_owned())
}

/// [`header`] with a value the caller already owns.
fn header_with(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value,
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn ok_response(ok: OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Ok as i32,
            message: String::new(),
            details: Vec::new(),
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::OkResponse(ok)),
    }
}

/// A denied response. The gRPC-level status inside it is what Envoy's
/// network filter and logs see; the HTTP client sees `http_status`.
fn denied_response(
    http_status: u16,
    headers: Vec<HeaderValueOption>,
    body: String,
    reason: &str,
) -> CheckResponse {
    let code = match http_status {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        404 => tonic::Code::NotFound,
        429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::PermissionDenied,
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: reason.to_owned(),
            details: Vec::new(),
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(http_status),
            }),
            headers,
            body,
        })),
    }
}

#[cfg(test)]
mod tests;
