//! Unit tests for `ext_authz::response`.

use std::time::Duration;

use prost::Message;

use super::*;

fn responses(style: ErrorBodyStyle) -> Responses {
    Responses::new(
        ResponseSettings {
            style,
            identity: IdentityHeaders::default(),
            dynamic_metadata: true,
            www_authenticate: Some("Bearer".into()),
            unmatched_route: DenialText::new("not_found", "No such endpoint.", 404),
            malformed_request: DenialText::new(
                "bad_request",
                "The request could not be read.",
                400,
            ),
            forward_metadata: Vec::new(),
        },
        &DenialCatalog::default(),
        &ScopeCatalog::carboncopy(),
    )
}

fn denied(response: &CheckResponse) -> &DeniedHttpResponse {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("not a denial: {other:?}"),
    }
}

fn header_value<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

#[test]
fn the_three_styles_render_as_the_products_document_them() {
    assert_eq!(
        ErrorBodyStyle::ErrorObject.render("unauthorized", "Invalid or missing API key.", None),
        r#"{"error":{"code":"unauthorized","message":"Invalid or missing API key."}}"#
    );
    assert_eq!(
        ErrorBodyStyle::ErrorObject.render("forbidden", "m", Some("orders:read")),
        r#"{"error":{"code":"forbidden","message":"m"}}"#,
        "Carboncopy's body does not name the scope"
    );
    assert_eq!(
        ErrorBodyStyle::ErrorObjectWithDetails.render("forbidden_scope", "m", Some("read:trades")),
        r#"{"error":{"code":"forbidden_scope","message":"m","details":{"required_scope":"read:trades"}}}"#
    );
    assert_eq!(
        ErrorBodyStyle::ErrorObjectWithDetails.render("unauthorized", "m", None),
        r#"{"error":{"code":"unauthorized","message":"m"}}"#
    );
    assert_eq!(
        ErrorBodyStyle::CodeDetail.render("invalid_api_key", "Unknown or revoked API key.", None),
        r#"{"code":"invalid_api_key","detail":"Unknown or revoked API key."}"#
    );
    assert_eq!(
        ErrorBodyStyle::CodeDetail.render("c", "say \"hi\"\n", None),
        r#"{"code":"c","detail":"say \"hi\"\n"}"#,
        "escaped"
    );
}

#[test]
fn a_401_carries_the_challenge_and_json_content_type() {
    let responses = responses(ErrorBodyStyle::ErrorObject);
    let response = responses.deny(&DenialCatalog::default().deny(Reason::UnknownKey), None);
    let denial = denied(&response);
    assert_eq!(denial.status.as_ref().unwrap().code, 401);
    assert_eq!(
        header_value(&denial.headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(
        header_value(&denial.headers, "www-authenticate"),
        Some("Bearer")
    );
    assert_eq!(header_value(&denial.headers, "retry-after"), None);
    assert_eq!(
        response.status.as_ref().unwrap().code,
        tonic::Code::Unauthenticated as i32
    );
}

#[test]
fn rate_limits_and_bans_say_when_to_retry_rounded_up() {
    let responses = responses(ErrorBodyStyle::CodeDetail);
    let mut limited = DenialCatalog::default().deny(Reason::RateLimited);
    limited.retry_after_ms = 1_001;
    let status = RateLimitStatus {
        limit: 5,
        remaining: 0,
        reset: Duration::from_millis(59_500),
    };
    let response = responses.deny(&limited, Some(status));
    let denial = denied(&response);
    assert_eq!(denial.status.as_ref().unwrap().code, 429);
    assert_eq!(header_value(&denial.headers, "retry-after"), Some("2"));
    assert_eq!(
        header_value(&denial.headers, "x-ratelimit-limit"),
        Some("5")
    );
    assert_eq!(
        header_value(&denial.headers, "x-ratelimit-remaining"),
        Some("0")
    );
    assert_eq!(
        header_value(&denial.headers, "x-ratelimit-reset"),
        Some("60")
    );
    assert_eq!(header_value(&denial.headers, "www-authenticate"), None);

    let mut banned = DenialCatalog::default().deny(Reason::TooManyFailedAttempts);
    banned.retry_after_ms = 299_999;
    let response = responses.deny(&banned, None);
    let denial = denied(&response);
    assert_eq!(denial.status.as_ref().unwrap().code, 401);
    assert_eq!(header_value(&denial.headers, "retry-after"), Some("300"));
    assert_eq!(
        denial.body,
        r#"{"code":"too_many_failed_auth","detail":"Too many invalid API keys from this address; retry later."}"#
    );
}

#[test]
fn insufficient_scope_bodies_name_the_scope_in_the_details_style() {
    let responses = responses(ErrorBodyStyle::ErrorObjectWithDetails);
    let mut denial = DenialCatalog::default().deny(Reason::InsufficientScope);
    denial.required_scope = Some("orders:write".into());
    let response = responses.deny(&denial, None);
    assert_eq!(
        denied(&response).body,
        r#"{"error":{"code":"forbidden","message":"This key does not have the required scope.","details":{"required_scope":"orders:write"}}}"#
    );
    // A scope outside the catalog (a filled-in template) renders the same way.
    let mut unknown_denial = DenialCatalog::default().deny(Reason::InsufficientScope);
    unknown_denial.required_scope = Some("strategies:read".into());
    let unknown = responses.deny(&unknown_denial, None);
    assert_eq!(denied(&unknown).status.as_ref().unwrap().code, 403);
    assert!(
        denied(&unknown)
            .body
            .contains(r#""required_scope":"strategies:read""#)
    );
}

#[test]
fn public_answers_remove_identity_headers_and_set_none() {
    let responses = responses(ErrorBodyStyle::ErrorObject);
    let response = responses.allow_public(CredentialRemoval {
        headers: vec!["authorization".into()],
        query_parameters: vec!["api_key".into()],
    });
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not OK: {response:?}");
    };
    assert_eq!(
        ok.headers_to_remove,
        [
            "x-keyward-key-id",
            "x-keyward-account-id",
            "x-keyward-scopes",
            "authorization"
        ]
    );
    assert_eq!(ok.query_parameters_to_remove, ["api_key"]);
    assert!(ok.headers.is_empty());
    assert_eq!(response.status.as_ref().unwrap().code, 0);
}

#[test]
fn retry_seconds_round_up() {
    assert_eq!(whole_seconds_rounded_up(0), 0);
    assert_eq!(whole_seconds_rounded_up(1), 1);
    assert_eq!(whole_seconds_rounded_up(1_000), 1);
    assert_eq!(whole_seconds_rounded_up(1_001), 2);
}

/// The allowed answer as envoy-types' prost structs build it: the code the
/// direct encoding replaced, kept as the reference it must match.
fn allowed_as_built(
    responses: &Responses,
    key: &CachedKey,
    catalog: &ScopeCatalog,
    rate_limit: Option<RateLimitStatus>,
    quota_remaining: Option<u64>,
    credential: CredentialRemoval,
) -> CheckResponse {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let string_value = |text: &str| Value {
        kind: Some(Kind::StringValue(text.to_owned())),
    };
    let mut scopes_header = String::new();
    for name in catalog.names(key.effective) {
        if !scopes_header.is_empty() {
            scopes_header.push(' ');
        }
        scopes_header.push_str(name);
    }
    let metadata = responses.dynamic_metadata.then(|| Struct {
        fields: HashMap::from([
            ("key_id".to_owned(), string_value(key.id())),
            ("account_id".to_owned(), string_value(key.account_id())),
            ("scopes".to_owned(), string_value(&scopes_header)),
        ]),
    });
    let mut headers = vec![
        header(&responses.identity.key_id, key.id()),
        header(&responses.identity.account_id, key.account_id()),
        header_with(&responses.identity.scopes, scopes_header),
    ];
    let mut headers_to_remove = credential.headers;
    for (name, header_name) in &responses.forward_metadata {
        if let Some(value) = key.metadata_value(name) {
            headers.push(header(header_name, value));
            headers_to_remove.retain(|spoofed| spoofed != header_name);
        }
    }
    let mut response_headers_to_add = rate_limit
        .map(|status| Vec::from(rate_limit_headers(status)))
        .unwrap_or_default();
    if let Some(remaining) = quota_remaining {
        response_headers_to_add.push(quota_header(remaining));
    }
    CheckResponse {
        dynamic_metadata: metadata,
        ..ok_response(OkHttpResponse {
            headers,
            headers_to_remove,
            query_parameters_to_remove: credential.query_parameters,
            response_headers_to_add,
            ..Default::default()
        })
    }
}

fn key_record(
    scopes: &[&str],
    metadata: &[(&str, &str)],
    networks: &[&str],
) -> crate::storage::KeyRecord {
    use crate::domain::{AccountId, KeyDigest, KeyId, UnixMillis};
    crate::storage::KeyRecord {
        id: KeyId::generate(),
        account_id: AccountId::parse("acct_42~x").unwrap(),
        name: "deploy bot".into(),
        digest: KeyDigest::of("cc_plain"),
        start: "cc_abcdef".into(),
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        rate_limit: None,
        quota: None,
        quota_usage: Default::default(),
        created_at: UnixMillis(0),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        metadata: metadata
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        allowed_networks: networks.iter().map(|net| (*net).to_owned()).collect(),
        rotated_from: None,
    }
}

/// Every shape of allowed answer, encoded directly, reads back (with
/// envoy-types' decoder) as exactly the message the prost structs made,
/// and is the same bytes: all of them when there is no dynamic metadata
/// (prost writes a `Struct`'s entries in a `HashMap`'s order), all but
/// that last field's entry order otherwise.
#[test]
fn allowed_answers_encoded_directly_are_the_prost_built_ones() {
    let catalog = ScopeCatalog::carboncopy();
    // A value long enough for two-byte lengths at every level, and an empty
    // one (proto3 leaves an empty header value out).
    let long = "é".repeat(150);
    let keys = [
        key_record(&["portfolio:read"], &[], &[]),
        key_record(&[], &[], &[]),
        key_record(
            &["orders:write", "traders:read", "account:read"],
            &[
                ("plan", "pro"),
                ("region", &long),
                ("team", ""),
                ("tier", "1"),
            ],
            &["10.0.0.0/8", "2001:db8::/32"],
        ),
        key_record(&["markets:read"], &[], &["192.0.2.0/24"]),
    ]
    .map(|record| CachedKey::from_record(record, &catalog));
    let forward_sets: [&[&str]; 3] = [&[], &["plan", "team", "absent"], &["region"]];
    let removals = [
        CredentialRemoval::default(),
        CredentialRemoval {
            headers: vec!["authorization".into()],
            query_parameters: Vec::new(),
        },
        CredentialRemoval {
            // A spoofed forwarded header: overwritten, so not removed.
            headers: vec![
                "x-api-key".into(),
                "x-keyward-meta-plan".into(),
                String::new(),
            ],
            query_parameters: vec!["api_key".into(), "API_KEY".into()],
        },
    ];
    let rate_limits = [
        None,
        Some(RateLimitStatus {
            limit: 100,
            remaining: 99,
            reset: Duration::from_millis(59_500),
        }),
        Some(RateLimitStatus {
            limit: u32::MAX,
            remaining: 0,
            reset: Duration::ZERO,
        }),
    ];
    let mut compared = 0;
    for dynamic_metadata in [true, false] {
        for forward in forward_sets {
            let mut responses = responses(ErrorBodyStyle::ErrorObject);
            responses.dynamic_metadata = dynamic_metadata;
            responses.forward_metadata = forward
                .iter()
                .map(|name| {
                    (
                        (*name).to_owned(),
                        format!("{METADATA_HEADER_PREFIX}{name}"),
                    )
                })
                .collect();
            if forward.len() == 1 {
                // Identity header names of another length.
                responses.identity = IdentityHeaders {
                    key_id: "x-id".into(),
                    account_id: "x-customer-account-identifier".into(),
                    scopes: "s".into(),
                };
            }
            for key in &keys {
                for removal in &removals {
                    for rate_limit in rate_limits {
                        for quota in [None, Some(0), Some(u64::MAX)] {
                            let reply = responses.allow_with_quota(
                                key,
                                &catalog,
                                rate_limit,
                                quota,
                                removal.clone(),
                            );
                            assert!(matches!(reply, CheckReply::Encoded(_)));
                            assert!(reply.is_allowed());
                            let built = allowed_as_built(
                                &responses,
                                key,
                                &catalog,
                                rate_limit,
                                quota,
                                removal.clone(),
                            );
                            assert_same_answer(&reply, &built);
                            compared += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(compared, 2 * 3 * 4 * 3 * 3 * 3);
}

fn assert_same_answer(reply: &CheckReply, built: &CheckResponse) {
    let bytes = reply.encode_to_vec();
    assert_eq!(bytes.len(), reply.encoded_len());
    let decoded = CheckResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!(&decoded, built);
    assert_eq!(&reply.to_response(), built);
    // Decoding into the reply type keeps the same message.
    assert_eq!(
        &CheckReply::decode(bytes.as_slice()).unwrap().to_response(),
        built
    );
    let expected = built.encode_to_vec();
    assert_eq!(bytes.len(), expected.len());
    // The dynamic metadata is the last field: everything before it is
    // byte-identical.
    let without_metadata = CheckResponse {
        dynamic_metadata: None,
        ..built.clone()
    }
    .encode_to_vec();
    assert_eq!(bytes[..without_metadata.len()], without_metadata[..]);
    if built.dynamic_metadata.is_none() {
        assert_eq!(bytes, expected);
    }
}

/// Denials and public answers stay prost structs and encode as such.
#[test]
fn other_answers_are_carried_as_built() {
    let responses = responses(ErrorBodyStyle::ErrorObject);
    let denial = responses.deny(&DenialCatalog::default().deny(Reason::UnknownKey), None);
    let public = responses.allow_public(CredentialRemoval::default());
    for (response, allowed) in [(denial, false), (public, true)] {
        let reply = CheckReply::from(response.clone());
        assert_eq!(reply.is_allowed(), allowed);
        assert_eq!(reply.encode_to_vec(), response.encode_to_vec());
        assert_eq!(reply.to_response(), response);
    }
}
