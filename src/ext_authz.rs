//! `envoy.service.auth.v3.Authorization/Check`: keyward as Envoy's external
//! authorization server. Each Check reads the HTTP request Envoy describes,
//! finds its route in the policy (`route_policy`), reads the key and the
//! client address (`request`), asks the same hot path as Authenticate
//! ([`Authenticator`]), and answers with an OK or denied HTTP response
//! (`response`).
//!
//! **Every answer is `Ok(CheckResponse)`** (written as a [`CheckReply`]).
//! A denial, including a request keyward cannot read (no HTTP attributes,
//! an ambiguous path), is a denied HTTP response with the product's status
//! and body, never a gRPC error:
//! Envoy turns gRPC errors into its own bare 403 (or, with
//! `failure_mode_allow`, lets the request through), which would hide the
//! product's error body. gRPC errors are left to tonic for calls that are
//! not a CheckRequest at all.
//!
//! The credential is never logged; denials are logged at debug level with
//! the reason and the key id, in a `check` span carrying the HTTP request's
//! `x-request-id` as `request_id`, and counted in `keyward_decisions_total`
//! (`rpc="Check"`; the route policy's own denials as `unmatched_route` and
//! `malformed_request`).

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb;
use prost::Message;
use prost::bytes::Bytes;
use tonic::Request;
use tracing::Instrument;

use crate::access_control::HotPathCaller;
use crate::authenticator::{Authenticator, Presented, PresentedKey, Required, Verdict};
use crate::scope_catalog::ScopeIndex;
use crate::telemetry::{REQUEST_ID_HEADER, Surface};

pub mod check_reply;
pub mod check_request;
pub mod grpc_service;
pub mod request;
pub mod response;
pub mod route_policy;
pub mod settings;

pub use check_reply::CheckReply;
pub use check_request::CheckRequest;
pub use grpc_service::{AuthorizationService, CheckMessage};
pub use settings::ExtAuthzSettings;

pub use request::KeySources;
pub use response::{ErrorBodyStyle, IdentityHeaders, Responses};
pub use route_policy::{RouteDefinition, RoutePolicy};

use crate::denial::PolicyDenial;
use request::{FoundKey, RequestHeaders};
use response::CredentialRemoval;
use route_policy::{Access, MalformedRequest, RequestTarget, ResolvedScope};

/// The fully-qualified service name, for health and logs.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// What happens to a request that no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmatchedRoute {
    /// Denied with `http.denials.unmatched_route` (404 by default).
    Deny,
    /// Allowed with any valid key, no particular scope.
    AnyKey,
    /// Allowed without a key.
    Public,
}

impl UnmatchedRoute {
    pub const NAMES: &'static str = "deny, any_key, public";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "deny" => Some(Self::Deny),
            "any_key" => Some(Self::AnyKey),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
}

/// The Authorization service.
pub struct ExtAuthzApi {
    authenticator: Arc<Authenticator>,
    settings: ExtAuthzSettings,
}

impl ExtAuthzApi {
    pub fn new(authenticator: Arc<Authenticator>, settings: ExtAuthzSettings) -> Self {
        Self {
            authenticator,
            settings,
        }
    }

    async fn decide(&self, check: &CheckRequest, caller: &HotPathCaller) -> CheckReply {
        let responses = &self.settings.responses;
        let Some(http) = check.http() else {
            return self.refuse_malformed(MalformedRequest::NoHttpAttributes);
        };
        let target = match RequestTarget::parse(http.path()) {
            Ok(target) => target,
            Err(problem) => return self.refuse_malformed(problem),
        };
        let headers = RequestHeaders::of(http);
        let sources = &self.settings.key_sources;

        let matched = self.settings.routes.find(http.method(), &target);
        let access = match (&matched, self.settings.unmatched_route) {
            (Some(matched), _) => matched.access,
            (None, UnmatchedRoute::Deny) => {
                tracing::debug!(rpc = "Check", reason = "unmatched_route", method = %http.method(), "denied");
                self.authenticator
                    .telemetry()
                    .record_policy_denial(PolicyDenial::UnmatchedRoute);
                return responses.deny_policy(PolicyDenial::UnmatchedRoute).into();
            }
            (None, UnmatchedRoute::AnyKey) => &Access::ANY_KEY,
            (None, UnmatchedRoute::Public) => &Access::Public,
        };
        let (fixed, templates) = match access {
            Access::Public => {
                let mut strip = if self.settings.strip_credential {
                    sources.carrying_keys(&headers, &target, self.authenticator.key_format())
                } else {
                    CredentialRemoval::default()
                };
                request::spoofed_metadata_headers(&headers, &mut strip);
                return responses.allow_public(strip).into();
            }
            Access::Scopes { fixed, templates } => (fixed, templates),
        };

        // Templated scopes, filled in from this request.
        let catalog = self.authenticator.catalog();
        let mut filled: Vec<ScopeIndex> = Vec::new();
        let mut unknown_scope = None;
        if let Some(matched) = &matched {
            for template in templates {
                match matched.resolve(template, &target, catalog) {
                    Ok(ResolvedScope::Known(index)) => filled.push(index),
                    Ok(ResolvedScope::Unknown(name)) => {
                        unknown_scope.get_or_insert(name);
                    }
                    Err(problem) => return self.refuse_malformed(problem),
                }
            }
        }
        let required = match unknown_scope.as_deref() {
            Some(name) => Required::Unknown(name),
            None if filled.is_empty() => Required::Scopes(fixed),
            None => {
                filled.extend_from_slice(fixed);
                Required::Scopes(&filled)
            }
        };

        let found = match sources.find(&headers, &target) {
            Ok(found) => found,
            Err(problem) => return self.refuse_malformed(problem),
        };
        let key = match &found {
            // A bare key where the product documents a scheme is no key.
            FoundKey::Authorization(value)
                if self.settings.require_scheme
                    && !request::has_scheme(value, self.authenticator.key_format().schemes()) =>
            {
                PresentedKey::Absent
            }
            FoundKey::Authorization(value) => PresentedKey::Credential(value),
            FoundKey::Bare(value) => PresentedKey::BareKey(value),
            FoundKey::None => PresentedKey::Absent,
        };
        // Envoy's client address counts only from a caller trusted to state
        // one; anyone else's failures count against its own address.
        let client = caller.client(request::client_address(
            check,
            &headers,
            self.settings.trusted_proxy_hops,
        ));
        let min_revision = match self
            .settings
            .min_revision_header
            .as_deref()
            .and_then(|name| headers.get(name))
        {
            None => 0,
            Some(value) => match value.trim().parse::<u64>() {
                Ok(revision) => revision,
                Err(_) => return self.refuse_malformed(MalformedRequest::BadMinRevision),
            },
        };
        let verdict = self
            .authenticator
            .authenticate(Presented {
                surface: Surface::ExtAuthzCheck,
                key,
                required,
                client,
                account: None,
                min_revision,
            })
            .await;
        let (key, rate_limit, quota_remaining) = match verdict {
            Verdict::Allowed {
                key,
                rate_limit,
                quota_remaining,
            } => (key, rate_limit, quota_remaining),
            // The authenticator has logged and counted the denial.
            Verdict::Denied {
                denial,
                rate_limit,
                quota_remaining,
                ..
            } => {
                return responses
                    .deny_with_quota(&denial, rate_limit, quota_remaining)
                    .into();
            }
        };
        let mut removal = if self.settings.strip_credential {
            sources.present(&headers, &target, self.authenticator.key_format())
        } else {
            CredentialRemoval::default()
        };
        // Whatever `strip_credential` says: the upstream trusts these.
        request::spoofed_metadata_headers(&headers, &mut removal);
        responses.allow_with_quota(&key, catalog, rate_limit, quota_remaining, removal)
    }

    fn refuse_malformed(&self, problem: MalformedRequest) -> CheckReply {
        tracing::debug!(rpc = "Check", reason = "malformed_request", %problem, "denied");
        self.authenticator
            .telemetry()
            .record_policy_denial(PolicyDenial::MalformedRequest);
        self.settings
            .responses
            .deny_policy(PolicyDenial::MalformedRequest)
            .into()
    }
}

impl ExtAuthzApi {
    /// Answers one Check as it arrived from the transport: a message that
    /// does not decode is a malformed request (the product's 400), never a
    /// gRPC error (see `grpc_service`).
    pub async fn respond(&self, request: Request<CheckMessage>) -> CheckReply {
        let (_, extensions, message) = request.into_parts();
        let check = match message {
            CheckMessage::Decoded(check) => check,
            CheckMessage::Undecodable(error) => {
                // The problem names the field (`HeaderValue.value`), never
                // the bytes.
                tracing::debug!(rpc = "Check", %error, "the CheckRequest does not decode");
                return self.refuse_malformed(MalformedRequest::Undecodable);
            }
        };
        let caller = HotPathCaller::of(&extensions);
        // Log lines of this Check carry the HTTP request's id, which Envoy's
        // access log prints (`%REQ(X-REQUEST-ID)%`), rather than the gRPC
        // call's. The span is debug level like the hot path's: at `info`
        // it is disabled and the header is not even looked up.
        let span = tracing::debug_span!("check", request_id = tracing::field::Empty);
        if !span.is_disabled()
            && let Some(id) = http_request_id(&check)
        {
            span.record("request_id", &*id);
        }
        self.decide(&check, caller).instrument(span).await
    }

    /// Answers a serialized CheckRequest in-process (benchmarks), as from
    /// a trusted caller: decoded as the transport decodes it.
    pub async fn check_encoded(&self, bytes: Bytes) -> CheckReply {
        let message = match CheckRequest::decode(bytes) {
            Ok(check) => CheckMessage::Decoded(check),
            Err(error) => CheckMessage::Undecodable(error),
        };
        self.respond(Request::new(message)).await
    }

    /// Answers an envoy-types CheckRequest in-process, as from a trusted
    /// caller. It is encoded and decoded again (keyward reads requests as
    /// bytes); callers holding the bytes use [`Self::check_encoded`].
    pub async fn check(&self, check: pb::CheckRequest) -> CheckReply {
        self.check_encoded(Bytes::from(check.encode_to_vec())).await
    }
}

/// The HTTP request's `x-request-id` (Envoy generates one for every request
/// unless told not to) when it is 1 to 128 visible ASCII characters, so a
/// client's value cannot forge log lines. `attributes.request.http.id` is
/// Envoy's internal stream id, not this.
fn http_request_id(check: &CheckRequest) -> Option<std::borrow::Cow<'_, str>> {
    let id = RequestHeaders::of(check.http()?).get(REQUEST_ID_HEADER)?;
    let sane = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic());
    sane.then_some(id)
}
