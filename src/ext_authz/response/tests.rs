//! Unit tests for `ext_authz::response`.

use std::time::Duration;

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
