//! Unit tests for `ext_authz::request`.

use envoy_types::ext_authz::v3::pb::{self, Address};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use prost::Message;
use prost::bytes::Bytes;

use super::*;

/// The request as keyward reads it off the wire.
fn decoded(check: pb::CheckRequest) -> CheckRequest {
    CheckRequest::decode(Bytes::from(check.encode_to_vec())).unwrap()
}

fn with_http(http: HttpRequest) -> CheckRequest {
    decoded(pb::CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

fn headers_of(check: &CheckRequest) -> RequestHeaders<'_> {
    RequestHeaders::of(check.http().expect("an HTTP request"))
}

fn http(headers: &[(&str, &str)]) -> CheckRequest {
    with_http(HttpRequest {
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    })
}

fn attributes_from(peer: &str) -> CheckRequest {
    decoded(pb::CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: peer.into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

/// Envoy's documented "edge proxy with two trusted external proxies"
/// example (use_remote_address: true): downstream 192.0.2.5, XFF
/// "203.0.113.128, 203.0.113.10, 203.0.113.1"; with xff_num_trusted_hops = 2
/// Envoy trusts 203.0.113.10 and appends the peer before ext_authz runs.
#[test]
fn trusted_proxy_hops_count_like_envoys_xff_num_trusted_hops() {
    let attributes = attributes_from("192.0.2.5");
    let as_ext_authz_sees_it = http(&[(
        "x-forwarded-for",
        "203.0.113.128, 203.0.113.10, 203.0.113.1, 192.0.2.5",
    )]);
    let headers = headers_of(&as_ext_authz_sees_it);
    assert_eq!(client_address(&attributes, &headers, 0), ip("192.0.2.5"));
    assert_eq!(client_address(&attributes, &headers, 1), ip("203.0.113.1"));
    assert_eq!(
        client_address(&attributes, &headers, 2),
        ip("203.0.113.10"),
        "Envoy's trusted client address for xff_num_trusted_hops = 2"
    );
    assert_eq!(
        client_address(&attributes, &headers, 3),
        ip("203.0.113.128")
    );
    assert_eq!(
        client_address(&attributes, &headers, 4),
        None,
        "fewer entries than trusted hops: no client address (the peer is our own proxy)"
    );

    // Only Envoy's own entry: the request skipped the trusted proxy.
    let direct = http(&[("x-forwarded-for", "192.0.2.5")]);
    assert_eq!(client_address(&attributes, &headers_of(&direct), 1), None);
    let garbage = http(&[("x-forwarded-for", "not-an-ip, 192.0.2.5")]);
    assert_eq!(client_address(&attributes, &headers_of(&garbage), 1), None);
    let absent = http(&[]);
    assert_eq!(
        client_address(&attributes, &headers_of(&absent), 1),
        None,
        "no header behind a trusted proxy: no client address"
    );
    let with_ports = http(&[(
        "x-forwarded-for",
        "[2001:db8::1]:443,198.51.100.1:80,192.0.2.5",
    )]);
    let headers = headers_of(&with_ports);
    assert_eq!(client_address(&attributes, &headers, 1), ip("198.51.100.1"));
    assert_eq!(client_address(&attributes, &headers, 2), ip("2001:db8::1"));

    let none = http(&[]);
    assert_eq!(
        client_address(&decoded(pb::CheckRequest::default()), &headers_of(&none), 0),
        None
    );
}

#[test]
fn a_scheme_is_a_known_word_then_whitespace() {
    let schemes = ["Bearer".to_owned(), "ApiKey".to_owned()];
    for value in ["Bearer cc_x", "bearer  cc_x", " APIKEY\tcc_x", "Bearer "] {
        assert!(has_scheme(value, &schemes), "{value:?}");
    }
    for value in ["cc_x", "Bearer", "Basic cc_x", "Bearercc_x", ""] {
        assert!(!has_scheme(value, &schemes), "{value:?}");
    }
}

#[test]
fn raw_headers_read_like_the_map() {
    let request = with_http(HttpRequest {
        header_map: Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "authorization".into(),
                    value: String::new(),
                    raw_value: b"Bearer a".to_vec(),
                },
                HeaderValue {
                    key: "x-api-key".into(),
                    value: "one".into(),
                    raw_value: Vec::new(),
                },
                HeaderValue {
                    key: "x-api-key".into(),
                    value: String::new(),
                    raw_value: b"two".to_vec(),
                },
            ],
        }),
        ..Default::default()
    });
    let headers = headers_of(&request);
    assert_eq!(headers.get("authorization").as_deref(), Some("Bearer a"));
    assert_eq!(headers.get("x-api-key").as_deref(), Some("one,two"));
    assert_eq!(headers.get("cookie"), None);
}

#[test]
fn the_first_present_source_is_read_and_every_present_one_is_removed() {
    let sources = KeySources {
        authorization_header: true,
        header: Some("x-api-key".into()),
        query_parameter: Some("api_key".into()),
    };
    let request = http(&[("x-api-key", "cc_from_header")]);
    let headers = headers_of(&request);
    let target = RequestTarget::parse("/a?api_key=cc_from_query").unwrap();
    match sources.find(&headers, &target).unwrap() {
        FoundKey::Bare(value) => assert_eq!(value, "cc_from_header"),
        _ => panic!("expected the named header"),
    }
    let removal = sources.present(&headers, &target, &KeyFormat::carboncopy());
    assert_eq!(removal.headers, ["x-api-key"]);
    assert_eq!(removal.query_parameters, ["api_key"]);

    let plain = RequestTarget::parse("/a?other=1").unwrap();
    let nothing = http(&[]);
    let no_headers = headers_of(&nothing);
    assert!(matches!(
        sources.find(&no_headers, &plain).unwrap(),
        FoundKey::None
    ));
    assert_eq!(
        sources.present(&no_headers, &plain, &KeyFormat::carboncopy()),
        CredentialRemoval::default()
    );
}

#[test]
fn public_routes_strip_only_what_carries_the_key_prefix() {
    let sources = KeySources {
        authorization_header: true,
        header: Some("x-api-key".into()),
        query_parameter: Some("api_key".into()),
    };
    let format = KeyFormat::carboncopy();
    let jwt = http(&[("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig")]);
    let target = RequestTarget::parse("/a?api_key=cc_short").unwrap();
    let removal = sources.carrying_keys(&headers_of(&jwt), &target, &format);
    assert!(removal.headers.is_empty(), "a JWT for the upstream stays");
    assert_eq!(
        removal.query_parameters,
        ["api_key"],
        "a malformed key goes"
    );

    let key = http(&[("authorization", "Bearer cc_abc"), ("x-api-key", "other")]);
    let removal = sources.carrying_keys(
        &headers_of(&key),
        &RequestTarget::parse("/a").unwrap(),
        &format,
    );
    assert_eq!(removal.headers, ["authorization"]);
}

/// The leaks: a key in a form keyward does not read (another
/// scheme, another header, another spelling of the query parameter) still
/// never reaches the upstream.
#[test]
fn keys_in_forms_keyward_does_not_read_are_stripped_too() {
    let sources = KeySources {
        authorization_header: true,
        header: None,
        query_parameter: Some("api_key".into()),
    };
    let format = KeyFormat::carboncopy();
    let secret = format!("cc_{}", "a".repeat(64));
    let token = format!("Token {secret}");
    let request = http(&[
        ("authorization", &token),
        ("x-forwarded-key", &secret),
        ("x-note", "Basic dXNlcjpwYXNz"),
        ("user-agent", "curl/8.0 (linux) cc_third_word"),
    ]);
    let headers = headers_of(&request);
    let raw_target = format!("/public?API_KEY={secret}&auth=Bearer%20{secret}&page=2");
    let target = RequestTarget::parse(&raw_target).unwrap();
    for removal in [
        sources.carrying_keys(&headers, &target, &format),
        sources.present(&headers, &target, &format),
    ] {
        let mut stripped = removal.headers.clone();
        stripped.sort();
        assert_eq!(stripped, ["authorization", "x-forwarded-key"]);
        let mut parameters = removal.query_parameters.clone();
        parameters.sort();
        assert_eq!(parameters, ["API_KEY", "auth"]);
    }
}
