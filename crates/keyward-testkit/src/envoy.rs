//! Playing Envoy in tests: CheckRequests built the way Envoy's ext_authz
//! filter builds them (the lower-case header map including pseudo-headers,
//! the request target with its query string, the method, the peer address,
//! and `x-forwarded-for` with the peer appended, as Envoy's connection
//! manager does with `use_remote_address: true` before ext_authz runs),
//! and readers for the allowed and denied answers. Shared by the ext_authz
//! tests and the product tests.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    Address, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HttpResponse,
    OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::{self as core, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use keyward::config::Config;
use tonic::transport::Channel;

use super::{TestApp, test_config};

/// A config from TOML text, with the test harness's short intervals.
pub fn config_from(text: &str) -> Config {
    let mut config = Config::parse(text, "test.toml").expect("test config is valid");
    let harness = test_config();
    config.feed = harness.feed;
    config.last_used_flush_interval = harness.last_used_flush_interval;
    config.server.shutdown_grace = harness.server.shutdown_grace;
    config
}

/// Plays Envoy's ext_authz filter.
pub struct Envoy {
    client: AuthorizationClient<Channel>,
    /// The service token Envoy sends (`grpc_service.initial_metadata`).
    token: Option<String>,
}

impl Envoy {
    pub fn of(app: &TestApp) -> Self {
        Self::on(app.channel.clone())
    }

    /// Against any keyward, e.g. a `keyward serve` process.
    pub fn on(channel: Channel) -> Self {
        Self {
            client: AuthorizationClient::new(channel),
            token: None,
        }
    }

    /// Sending `authorization: Bearer <token>` with every Check, as the
    /// example Envoy config does.
    pub fn with_token(channel: Channel, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::on(channel)
        }
    }

    pub async fn check(&mut self, request: CheckRequest) -> CheckResponse {
        self.try_check(request)
            .await
            .expect("Check answers every request with a CheckResponse")
    }

    /// A Check that may be refused before keyward reads it (a missing or
    /// wrong service token).
    pub async fn try_check(
        &mut self,
        request: CheckRequest,
    ) -> Result<CheckResponse, tonic::Status> {
        let mut request = tonic::Request::new(request);
        if let Some(token) = &self.token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("a token is ASCII"),
            );
        }
        self.client
            .check(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// An HTTP request as Envoy describes it in a CheckRequest.
pub struct HttpCall {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    peer: String,
    request_id: String,
}

/// The `x-request-id` Envoy generated, unless a test names its own.
const REQUEST_ID: &str = "5b7e2a41-63b9-4d0e-9a59-1c1b7f0f2a10";

/// `GET /path` from 192.0.2.10.
pub fn get(target: &str) -> HttpCall {
    call("GET", target)
}

pub fn call(method: &str, target: &str) -> HttpCall {
    HttpCall {
        method: method.into(),
        target: target.into(),
        headers: Vec::new(),
        peer: "192.0.2.10".into(),
        request_id: REQUEST_ID.into(),
    }
}

impl HttpCall {
    /// Adds a header; Envoy lower-cases names.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn bearer(self, secret: &str) -> Self {
        self.header("Authorization", &format!("Bearer {secret}"))
    }

    /// The HTTP request's `x-request-id` (Envoy's access log shows it).
    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = id.into();
        self
    }

    /// The address Envoy received the connection from.
    pub fn sent_by_peer(mut self, address: &str) -> Self {
        self.peer = address.into();
        self
    }

    /// The `x-forwarded-for` the request arrived at Envoy with (written by
    /// the client and the proxies in front of Envoy); Envoy appends its peer.
    pub fn forwarded_for(self, received: &str) -> Self {
        self.header("x-forwarded-for", received)
    }

    pub fn build(self) -> CheckRequest {
        let mut headers: HashMap<String, String> = HashMap::from([
            (":authority".into(), "api.example.com".into()),
            (":method".into(), self.method.clone()),
            (":path".into(), self.target.clone()),
            (":scheme".into(), "http".into()),
            ("user-agent".into(), "curl/8.5.0".into()),
            ("accept".into(), "*/*".into()),
            ("x-forwarded-proto".into(), "http".into()),
            ("x-request-id".into(), self.request_id.clone()),
        ]);
        for (name, value) in self.headers {
            // Envoy merges repeated headers with a comma.
            headers
                .entry(name)
                .and_modify(|existing| {
                    existing.push(',');
                    existing.push_str(&value);
                })
                .or_insert(value);
        }
        // `use_remote_address: true` (examples/envoy/envoy.yaml): Envoy
        // appends the peer it received the request from.
        headers
            .entry("x-forwarded-for".into())
            .and_modify(|forwarded| {
                forwarded.push(',');
                forwarded.push_str(&self.peer);
            })
            .or_insert_with(|| self.peer.clone());
        let socket = |address: &str, port| core::Address {
            address: Some(Address::SocketAddress(SocketAddress {
                address: address.into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(socket(&self.peer, 51_234)),
                    ..Default::default()
                }),
                destination: Some(Peer {
                    address: Some(socket("10.0.0.5", 8080)),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        // Envoy's stream id, a number unrelated to x-request-id.
                        id: "10938562398475629384".into(),
                        method: self.method,
                        headers,
                        path: self.target,
                        host: "api.example.com".into(),
                        scheme: "http".into(),
                        protocol: "HTTP/1.1".into(),
                        size: -1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

impl HttpCall {
    /// The same request as Envoy sends it with `encode_raw_headers: true`:
    /// the headers as a list (`header_map`, in name order) instead of a map.
    pub fn build_raw_headers(self) -> CheckRequest {
        let mut check = self.build();
        let http = check
            .attributes
            .as_mut()
            .and_then(|attributes| attributes.request.as_mut())
            .and_then(|request| request.http.as_mut())
            .expect("built with an HTTP request");
        let mut headers: Vec<(String, String)> =
            std::mem::take(&mut http.headers).into_iter().collect();
        headers.sort();
        http.header_map = Some(core::HeaderMap {
            headers: headers
                .into_iter()
                .map(|(key, value)| core::HeaderValue {
                    key,
                    raw_value: value.into_bytes(),
                    ..Default::default()
                })
                .collect(),
        });
        check
    }
}

/// The OK part of an allowed response (and checks the gRPC status is OK).
#[track_caller]
pub fn allowed(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(
        response.status.as_ref().map(|s| s.code),
        Some(0),
        "not allowed: {response:?}"
    );
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("allowed without an OkHttpResponse: {other:?}"),
    }
}

/// A denial as the HTTP client will see it.
#[derive(Debug)]
pub struct Denied {
    pub status: i32,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

#[track_caller]
pub fn denied(response: &CheckResponse) -> Denied {
    assert_ne!(
        response.status.as_ref().map_or(0, |s| s.code),
        0,
        "a denial must not carry gRPC OK: {response:?}"
    );
    let Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
        status,
        headers,
        body,
    })) = &response.http_response
    else {
        panic!("not denied: {response:?}");
    };
    for header in headers {
        assert_eq!(
            header.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
    }
    Denied {
        status: status.as_ref().expect("a status").code,
        headers: headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
        body: serde_json::from_str(body).expect("the body is JSON"),
    }
}

/// Request headers an OK response sets for the upstream.
pub fn upstream_headers(ok: &OkHttpResponse) -> HashMap<String, String> {
    for header in &ok.headers {
        assert_eq!(
            header.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "identity headers must overwrite what the client sent"
        );
    }
    ok.headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

pub fn response_headers(ok: &OkHttpResponse) -> HashMap<String, String> {
    ok.response_headers_to_add
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

/// Nothing in a response may contain the secret.
#[track_caller]
pub fn assert_secret_absent(response: &CheckResponse, secret: &str) {
    assert!(
        !format!("{response:?}").contains(secret),
        "the secret leaked into a response"
    );
}

/// A shipped profile (`profiles/<name>.toml`) exactly as a newcomer starts
/// it with `--config`, except the harness's short feed, flush and shutdown
/// intervals, which change only how long tests wait.
pub fn profile(name: &str) -> Config {
    let path = crate::repository_root()
        .join("profiles")
        .join(format!("{name}.toml"));
    let mut config = Config::load(&path).expect("the shipped profile loads");
    let harness = test_config();
    config.feed = harness.feed;
    config.last_used_flush_interval = harness.last_used_flush_interval;
    config.server.shutdown_grace = harness.server.shutdown_grace;
    config
}

/// A backend asking keyward directly (the other documented path): the
/// denial it gets must say what the HTTP client sees, the same `code` and
/// message (read from `body`, in any of the three error styles), the same
/// status, and `required_scope` (`""` when none; in the details style the
/// body names the same one).
#[track_caller]
pub fn assert_same_denial(
    denial: Option<&keyward::proto::Denial>,
    status: i32,
    body: &serde_json::Value,
    required_scope: &str,
) {
    let denial = denial.expect("denied through gRPC too");
    let (code, message) = match body.get("error") {
        Some(error) => {
            if let Some(details) = error.get("details") {
                assert_eq!(details["required_scope"], required_scope, "{body}");
            }
            (&error["code"], &error["message"])
        }
        None => (&body["code"], &body["detail"]),
    };
    assert_eq!(
        (
            denial.code.as_str(),
            denial.message.as_str(),
            i32::try_from(denial.http_status).unwrap(),
            denial.required_scope.as_str(),
        ),
        (
            code.as_str().expect("a code"),
            message.as_str().expect("a message"),
            status,
            required_scope,
        ),
        "gRPC denial {denial:?} against HTTP {status} {body}"
    );
}

/// CheckScope with a credential, as a backend sends the header's value.
pub async fn check_scope(
    app: &mut TestApp,
    credential: &str,
    scopes: &[&str],
) -> keyward::proto::CheckScopeResponse {
    app.keys
        .check_scope(keyward::proto::CheckScopeRequest {
            credential: credential.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .expect("CheckScope answers")
        .into_inner()
}

/// The commented example block of a shipped profile that starts with the
/// line `# [table]`, uncommented (one `# ` taken off each line up to the
/// first line that is not a comment), so a test parses exactly what the
/// profile shows. `replacements` fill in the placeholders; each must occur,
/// so an edited example makes the test fail instead of drifting.
pub fn commented_example(name: &str, table: &str, replacements: &[(&str, &str)]) -> String {
    let path = crate::repository_root()
        .join("profiles")
        .join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).expect("the shipped profile");
    let header = format!("# [{table}]");
    let mut lines = text.lines().skip_while(|line| line.trim_end() != header);
    let mut example = String::new();
    for line in lines.by_ref().take_while(|line| line.starts_with('#')) {
        let uncommented = line
            .strip_prefix("# ")
            .unwrap_or(line.trim_start_matches('#'));
        example.push_str(uncommented);
        example.push('\n');
    }
    assert!(
        !example.is_empty(),
        "{header} not found in {}",
        path.display()
    );
    for (placeholder, value) in replacements {
        assert!(
            example.contains(placeholder),
            "the example no longer has {placeholder:?}:\n{example}"
        );
        example = example.replace(placeholder, value);
    }
    example
}
