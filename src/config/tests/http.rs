//! `[http]` through [`Config::parse`] (it refers to `[keys]` and `[[scopes]]`).

use crate::config::Config;
use crate::ext_authz::{ErrorBodyStyle, UnmatchedRoute};

#[test]
fn without_an_http_section_every_route_is_denied_and_keys_come_from_authorization() {
    let http = Config::default().http;
    assert!(http.routes.is_empty());
    assert_eq!(http.unmatched_route, UnmatchedRoute::Deny);
    assert!(http.key_sources.authorization_header);
    assert_eq!(http.key_sources.header, None);
    assert_eq!(http.key_sources.query_parameter, None);
    assert!(http.strip_credential);
    assert_eq!(http.trusted_proxy_hops, 0);
    assert!(!http.require_scheme, "a bare key in the header is accepted");
    assert_eq!(http.responses.style(), ErrorBodyStyle::ErrorObject);
    let identity = http.responses.identity_headers();
    assert_eq!(
        (&*identity.key_id, &*identity.account_id, &*identity.scopes),
        (
            "x-keyward-key-id",
            "x-keyward-account-id",
            "x-keyward-scopes"
        )
    );
}

#[test]
fn a_full_http_section_parses() {
    let text = r#"
        [http]
        authorization_header = true
        require_scheme = true
        key_header = "x-api-key"
        key_query_parameter = "api_key"
        error_style = "code_detail"
        strip_credential = false
        dynamic_metadata = false
        unmatched_route = "any_key"
        trusted_proxy_hops = 2
        www_authenticate = 'Bearer realm="csboard"'

        [http.identity_headers]
        key_id = "x-key-id"
        account_id = "x-account-id"
        scopes = "x-scopes"

        [http.denials.unmatched_route]
        code = "no_route"
        http_status = 403

        [[http.routes]]
        methods = ["GET"]
        path = "/v1/health"
        public = true

        [[http.routes]]
        methods = ["GET"]
        path = "/restricted"
        scopes = ["{query.resource}:read"]
    "#;
    let http = Config::parse(text, "p.toml").unwrap().http;
    assert_eq!(http.key_sources.header.as_deref(), Some("x-api-key"));
    assert_eq!(http.key_sources.query_parameter.as_deref(), Some("api_key"));
    assert!(http.require_scheme);
    assert!(!http.strip_credential);
    assert_eq!(http.unmatched_route, UnmatchedRoute::AnyKey);
    assert_eq!(http.trusted_proxy_hops, 2);
    assert_eq!(http.routes.len(), 2);
    assert_eq!(http.responses.style(), ErrorBodyStyle::CodeDetail);
    assert_eq!(http.responses.identity_headers().scopes, "x-scopes");
}

#[test]
fn bad_http_values_name_the_key() {
    let cases = [
        ("[http]\nkey_header = \"X-Api-Key\"", "http.key_header"),
        ("[http]\nkey_header = \"authorization\"", "http.key_header"),
        ("[http]\nkey_header = \"host\"", "http.key_header"),
        ("[http]\nkey_header = \"\"", "http.key_header"),
        (
            "[http]\nkey_query_parameter = \"api key\"",
            "http.key_query_parameter",
        ),
        (
            "[http]\nauthorization_header = false",
            "http.authorization_header",
        ),
        (
            "[http]\nauthorization_header = false\nkey_header = \"x-api-key\"\nrequire_scheme = true",
            "http.require_scheme",
        ),
        (
            "[keys]\nschemes = []\n[http]\nrequire_scheme = true",
            "http.require_scheme",
        ),
        ("[http]\nrequire_scheme = \"yes\"", "http.require_scheme"),
        ("[http]\nerror_style = \"problem_json\"", "http.error_style"),
        (
            "[http]\nunmatched_route = \"allow\"",
            "http.unmatched_route",
        ),
        ("[http]\ntrusted_proxy_hops = 11", "http.trusted_proxy_hops"),
        ("[http]\ntrusted_proxy_hops = -1", "http.trusted_proxy_hops"),
        (
            "[http]\nwww_authenticate = \"Bearer\\nx\"",
            "http.www_authenticate",
        ),
        (
            "[http]\nstrip_credential = \"yes\"",
            "http.strip_credential",
        ),
        ("[http]\nstrip_credentials = true", "http.strip_credentials"),
        ("[http]\ndynamic_metadata = 1", "http.dynamic_metadata"),
        (
            "[http.identity_headers]\nkey_id = \"x-id\"\naccount_id = \"x-id\"",
            "http.identity_headers.account_id",
        ),
        (
            "[http]\nkey_header = \"x-api-key\"\n[http.identity_headers]\nscopes = \"x-api-key\"",
            "http.identity_headers.scopes",
        ),
        (
            "[http.identity_headers]\nkey_id = \"x-envoy-key\"",
            "http.identity_headers.key_id",
        ),
        (
            "[http.denials.unmatched_route]\nhttp_status = 200",
            "http.denials.unmatched_route.http_status",
        ),
        (
            "[http.denials.malformed_request]\ncode = \"two words\"",
            "http.denials.malformed_request.code",
        ),
        (
            "[http]\nwww_authenticate = \" Bearer\"",
            "http.www_authenticate",
        ),
        (
            &format!("[http]\nwww_authenticate = \"{}\"", "B".repeat(257)),
            "http.www_authenticate",
        ),
    ];
    assert_each_names_its_key(&cases);
}

#[test]
fn bad_routes_name_the_key() {
    let route = |body: &str| format!("[[http.routes]]\n{body}");
    let too_many_routes = route("methods = [\"GET\"]\npath = \"/a\"\npublic = true\n").repeat(1001);
    let cases = [
        (
            &route("methods = [\"GET\"]\npath = \"/a\"\npublic = true"),
            "OK",
        ),
        (
            &route("methods = [\"GET\"]\npath = \"/a\""),
            "http.routes[0]",
        ),
        (
            &route("methods = [\"FETCH\"]\npath = \"/a\"\nscopes = []"),
            "http.routes[0].methods",
        ),
        (
            &route("methods = [\"GET\"]\npath = \"a\"\nscopes = []"),
            "http.routes[0].path",
        ),
        (
            &route("methods = [\"GET\"]\npath = \"/a\"\nscopes = [\"orders:admin\"]"),
            "http.routes[0].scopes",
        ),
        (
            &route("methods = [\"GET\"]\npath = \"/a\"\nscopes = []\ncomment = \"x\""),
            "http.routes[0].comment",
        ),
        (&route("path = \"/a\"\nscopes = []"), "http.routes[0]"),
        (
            &format!(
                "{}\n{}",
                route("methods = [\"GET\"]\npath = \"/a\"\npublic = true"),
                route("methods = [\"GET\"]\npath = \"/b\"\npublic = true\nscopes = []")
            ),
            "http.routes[1].scopes",
        ),
        (&too_many_routes, "http.routes"),
        (
            &route(&format!(
                "methods = [\"GET\"]\npath = \"/{}\"\npublic = true",
                "a".repeat(1024)
            )),
            "http.routes[0].path",
        ),
        (
            &route(&format!(
                "methods = [\"GET\"]\npath = \"/a\"\nscopes = [{}]",
                vec!["\"orders:read\""; 17].join(", ")
            )),
            "http.routes[0].scopes",
        ),
        (
            &route(&format!(
                "methods = [\"GET\"]\npath = \"/a/{{{}}}\"\npublic = true",
                "p".repeat(33)
            )),
            "http.routes[0].path",
        ),
        (
            &route("methods = [\"GET\"]\npath = \"/a\"\npublic = \"yes\""),
            "http.routes[0].public",
        ),
    ];
    let cases = cases.map(|(text, key)| (text.as_str(), key));
    assert_each_names_its_key(&cases);
}

/// Each text fails naming its key in `p.toml` (or, for "OK", loads).
fn assert_each_names_its_key(cases: &[(&str, &str)]) {
    for &(text, key) in cases {
        let result = Config::parse(text, "p.toml");
        if key == "OK" {
            assert!(result.is_ok(), "{text:?}: {result:?}");
            continue;
        }
        let error = result.expect_err(text);
        assert_eq!(error.file, "p.toml");
        assert_eq!(error.key, key, "{text:?}: {error}");
        assert!(!error.reason.is_empty());
    }
}
