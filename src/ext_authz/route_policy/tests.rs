//! Unit tests for `ext_authz::route_policy`.

use super::*;

fn route(methods: &[&str], path: &str, scopes: &[&str]) -> RouteDefinition {
    RouteDefinition {
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        path: path.into(),
        scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
        public: false,
    }
}

fn public(methods: &[&str], path: &str) -> RouteDefinition {
    RouteDefinition {
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        path: path.into(),
        scopes: None,
        public: true,
    }
}

fn compile(routes: Vec<RouteDefinition>) -> RoutePolicy {
    RoutePolicy::compile(routes, &ScopeCatalog::carboncopy()).expect("valid routes")
}

fn compile_error(definition: RouteDefinition) -> RouteError {
    RoutePolicy::compile(vec![definition], &ScopeCatalog::carboncopy())
        .expect_err("invalid route")
        .1
}

/// The index of the route that matches, if any.
fn matched(policy: &RoutePolicy, method: &str, target: &str) -> Option<usize> {
    let target = RequestTarget::parse(target).expect("well-formed target");
    policy.find(method, &target).map(|m| m.index)
}

#[test]
fn prefix_routes_cover_the_path_and_everything_below_it_only() {
    let policy = compile(vec![route(
        &["GET"],
        "/api/v1/portfolio...",
        &["portfolio:read"],
    )]);
    for path in [
        "/api/v1/portfolio",
        "/api/v1/portfolio/",
        "/api/v1/portfolio/history",
        "/api/v1/portfolio/positions/42?page=2",
    ] {
        assert_eq!(matched(&policy, "GET", path), Some(0), "{path}");
    }
    for path in ["/api/v1/portfolios", "/api/v1/portfolio-x", "/api/v1", "/"] {
        assert_eq!(matched(&policy, "GET", path), None, "{path}");
    }
    assert_eq!(matched(&policy, "POST", "/api/v1/portfolio"), None);
}

#[test]
fn exact_routes_match_only_that_path() {
    let policy = compile(vec![public(&["GET"], "/v1/health"), public(&["GET"], "/")]);
    assert_eq!(matched(&policy, "GET", "/v1/health"), Some(0));
    assert_eq!(matched(&policy, "GET", "/v1/health?verbose=1"), Some(0));
    assert_eq!(
        matched(&policy, "GET", "/v1/health/"),
        None,
        "a trailing slash is another path"
    );
    assert_eq!(matched(&policy, "GET", "/v1/health/x"), None);
    assert_eq!(matched(&policy, "GET", "/"), Some(1));
    assert_eq!(matched(&policy, "HEAD", "/v1/health"), None);
}

#[test]
fn the_first_matching_route_wins() {
    let policy = compile(vec![
        route(&["GET"], "/api/v1/traders...", &["traders:read"]),
        route(
            &["POST", "PUT", "PATCH", "DELETE"],
            "/api/v1/traders...",
            &["traders:write"],
        ),
        route(&["*"], "/...", &[]),
    ]);
    assert_eq!(matched(&policy, "GET", "/api/v1/traders/7"), Some(0));
    assert_eq!(matched(&policy, "DELETE", "/api/v1/traders/7"), Some(1));
    assert_eq!(matched(&policy, "OPTIONS", "/api/v1/traders/7"), Some(2));
    assert_eq!(
        matched(&policy, "BREW", "/anything/else"),
        Some(2),
        "`*` takes any method"
    );
    assert_eq!(
        matched(&policy, "get", "/api/v1/traders"),
        Some(2),
        "methods are case-sensitive"
    );
}

#[test]
fn parameters_match_one_non_empty_segment() {
    let policy = compile(vec![route(
        &["GET"],
        "/api/v1/traders/{trader_id}/follow",
        &["traders:read"],
    )]);
    assert_eq!(
        matched(&policy, "GET", "/api/v1/traders/42/follow"),
        Some(0)
    );
    assert_eq!(matched(&policy, "GET", "/api/v1/traders/42/7/follow"), None);
    assert_eq!(matched(&policy, "GET", "/api/v1/traders/follow"), None);
}

#[test]
fn templates_fill_from_path_and_query() {
    let catalog = ScopeCatalog::carboncopy();
    let policy = RoutePolicy::compile(
        vec![
            route(&["GET"], "/restricted", &["{query.resource}:read"]),
            route(&["GET"], "/v2/{resource}...", &["{path.resource}:read"]),
        ],
        &catalog,
    )
    .unwrap();
    let resolve_all = |path: &str| {
        let target = RequestTarget::parse(path).unwrap();
        let found = policy.find("GET", &target).unwrap();
        let Access::Scopes { templates, .. } = found.access else {
            panic!("not a scoped route");
        };
        templates
            .iter()
            .map(|t| found.resolve(t, &target, &catalog))
            .collect::<Vec<_>>()
    };
    let known = |name| Ok(ResolvedScope::Known(catalog.lookup(name).unwrap()));
    assert_eq!(
        resolve_all("/restricted?resource=orders"),
        [known("orders:read")]
    );
    assert_eq!(
        resolve_all("/restricted?a=1&resource=traders&b"),
        [known("traders:read")]
    );
    assert_eq!(resolve_all("/v2/account/summary"), [known("account:read")]);
    assert_eq!(
        resolve_all("/v2/%61ccount"),
        [known("account:read")],
        "decoded"
    );
    assert_eq!(
        resolve_all("/restricted?resource=strategies"),
        [Ok(ResolvedScope::Unknown("strategies:read".into()))]
    );
    // Absent, empty, or not a scope name: the template is shown, not the input.
    for path in [
        "/restricted",
        "/restricted?resource=",
        "/restricted?resource=%3Cscript%3E",
    ] {
        assert_eq!(
            resolve_all(path),
            [Ok(ResolvedScope::Unknown("{query.resource}:read".into()))],
            "{path}"
        );
    }
    assert_eq!(
        resolve_all("/restricted?resource=orders&resource=account"),
        [Err(MalformedRequest::RepeatedQueryParameter)]
    );
    assert_eq!(
        resolve_all("/restricted?resource=%zz"),
        [Err(MalformedRequest::BadQueryEscape)]
    );
    // A second copy under an encoded name: an upstream decodes names and
    // might read `admin`, so it is refused, not ignored.
    for path in [
        "/restricted?resource=orders&resourc%65=admin",
        "/restricted?resourc%65=admin",
        "/restricted?%72esource=admin&resource=orders",
    ] {
        assert_eq!(
            resolve_all(path),
            [Err(MalformedRequest::EncodedQueryParameterName)],
            "{path}"
        );
    }
}

#[test]
fn ambiguous_paths_are_refused() {
    let cases = [
        ("", MalformedRequest::NotAbsolute),
        ("api/v1", MalformedRequest::NotAbsolute),
        ("*", MalformedRequest::NotAbsolute),
        ("http://example.com/a", MalformedRequest::NotAbsolute),
        ("/a/%2F/b", MalformedRequest::AmbiguousCharacter),
        ("/a%2fb", MalformedRequest::AmbiguousCharacter),
        ("/a%5Cb", MalformedRequest::AmbiguousCharacter),
        ("/a\\b", MalformedRequest::AmbiguousCharacter),
        ("/a%00b", MalformedRequest::AmbiguousCharacter),
        ("/a#frag", MalformedRequest::AmbiguousCharacter),
        ("/a/%zz", MalformedRequest::BadEscape),
        ("/a/%4", MalformedRequest::BadEscape),
        ("/a/%ff", MalformedRequest::BadEscape),
        ("/a/../admin", MalformedRequest::AmbiguousSegment),
        ("/a/%2e%2E/admin", MalformedRequest::AmbiguousSegment),
        ("/a/./b", MalformedRequest::AmbiguousSegment),
        ("/a//b", MalformedRequest::AmbiguousSegment),
        ("//", MalformedRequest::AmbiguousSegment),
        ("/a/..", MalformedRequest::AmbiguousSegment),
        // Servlet containers cut `;` path parameters before dot segments.
        (
            "/api/v1/portfolio/..;/admin",
            MalformedRequest::AmbiguousSegment,
        ),
        ("/a/..;x/b", MalformedRequest::AmbiguousSegment),
        ("/a/.;/b", MalformedRequest::AmbiguousSegment),
    ];
    for (target, expected) in cases {
        assert_eq!(
            RequestTarget::parse(target).err(),
            Some(expected),
            "{target:?}"
        );
    }
    let long = format!("/{}", "a".repeat(MAX_REQUEST_TARGET_BYTES));
    assert_eq!(
        RequestTarget::parse(&long).err(),
        Some(MalformedRequest::TooLong)
    );
    for fine in [
        "/",
        "/a/",
        "/a/b.c/..d",
        "/caf%C3%A9",
        "/a?x=%2F&y=..",
        "/a?",
    ] {
        assert!(RequestTarget::parse(fine).is_ok(), "{fine:?}");
    }
}

#[test]
fn query_parameters_are_matched_by_their_raw_name_and_encoded_names_are_refused() {
    let target = RequestTarget::parse("/a?api_key=cc+y%21&flag&other%5Fname=1").unwrap();
    assert_eq!(
        target.query_parameter("api_key").unwrap().as_deref(),
        Some("cc y!")
    );
    // An encoded copy of a name keyward reads is ambiguous, not ignored.
    let encoded = RequestTarget::parse("/a?api%5Fkey=x&api_key=cc_y").unwrap();
    assert_eq!(
        encoded.query_parameter("api_key"),
        Err(MalformedRequest::EncodedQueryParameterName)
    );
    assert_eq!(
        target.query_parameter_spellings("flag").collect::<Vec<_>>(),
        ["flag"]
    );
    assert_eq!(target.query_parameter("flag").unwrap().as_deref(), Some(""));
    assert_eq!(target.query_parameter_spellings("api").count(), 0);
    assert_eq!(target.query_parameter("missing").unwrap(), None);
}

#[test]
fn query_parameter_names_match_in_any_case() {
    let target = RequestTarget::parse("/a?API_KEY=csb_pub_x&b=1").unwrap();
    assert_eq!(
        target.query_parameter("api_key").unwrap().as_deref(),
        Some("csb_pub_x")
    );
    assert_eq!(
        target
            .query_parameter_spellings("api_key")
            .collect::<Vec<_>>(),
        ["API_KEY"]
    );
    // Two spellings are two copies: ambiguous.
    let twice = RequestTarget::parse("/a?api_key=x&Api_Key=y").unwrap();
    assert_eq!(
        twice.query_parameter("api_key"),
        Err(MalformedRequest::RepeatedQueryParameter)
    );
    let encoded = RequestTarget::parse("/a?API%5FKEY=x").unwrap();
    assert_eq!(
        encoded.query_parameter("api_key"),
        Err(MalformedRequest::EncodedQueryParameterName)
    );
}

#[test]
fn debug_output_leaves_the_query_out() {
    let target = RequestTarget::parse("/a?api_key=cc_s3cret").unwrap();
    let shown = format!("{target:?}");
    assert!(shown.contains("\"/a\""), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn bad_routes_are_refused_with_the_field_and_reason() {
    let cases: Vec<(RouteDefinition, &str, &str)> = vec![
        (route(&[], "/a", &[]), "methods", "at least one method"),
        (route(&["get"], "/a", &[]), "methods", "upper case"),
        (route(&["GET", "*"], "/a", &[]), "methods", "alone"),
        (route(&["GET"], "a", &[]), "path", "must start with `/`"),
        (
            route(&["GET"], "/a/...", &[]),
            "path",
            "without the last slash",
        ),
        (route(&["GET"], "/a//b", &[]), "path", "empty segment"),
        (route(&["GET"], "/a/", &[]), "path", "empty segment"),
        (route(&["GET"], "/a/../b", &[]), "path", "segment"),
        (route(&["GET"], "/a.../b", &[]), "path", "segment"),
        (route(&["GET"], "/a/{B}", &[]), "path", "parameter names"),
        (route(&["GET"], "/{x}/{x}", &[]), "path", "twice"),
        (route(&["GET"], "/a%20b", &[]), "path", "decoded"),
        (route(&["GET"], "/a{x}", &[]), "path", "whole segment"),
        (
            route(&["GET"], "/a", &["nope:read"]),
            "scopes",
            "unknown scope",
        ),
        (
            route(&["GET"], "/a", &["{path.x}:read"]),
            "scopes",
            "no {x} segment",
        ),
        (
            route(&["GET"], "/a", &["{query.resource}:reed"]),
            "scopes",
            "cannot produce",
        ),
        (
            route(&["GET"], "/a", &["{header.x}:read"]),
            "scopes",
            "placeholders are",
        ),
        (
            route(&["GET"], "/a", &["{query.a}{query.b}"]),
            "scopes",
            "side by side",
        ),
        (
            route(&["GET"], "/a", &["{query.a"]),
            "scopes",
            "without a `}`",
        ),
        (
            route(&["GET"], "/a", &["query.a}:read"]),
            "scopes",
            "without a `{`",
        ),
        (
            RouteDefinition {
                public: true,
                ..route(&["GET"], "/a", &["orders:read"])
            },
            "scopes",
            "public route",
        ),
        (
            RouteDefinition {
                scopes: None,
                ..route(&["GET"], "/a", &[])
            },
            "",
            "or `public = true`",
        ),
    ];
    for (definition, field, reason) in cases {
        let shown = format!("{definition:?}");
        let error = compile_error(definition);
        assert_eq!(error.field, field, "{shown}: {error}");
        assert!(error.reason.contains(reason), "{shown}: {error}");
    }
}

#[test]
fn an_empty_scope_list_means_any_valid_key() {
    let policy = compile(vec![route(&["GET"], "/api/v1/scopes", &[])]);
    let target = RequestTarget::parse("/api/v1/scopes").unwrap();
    assert_eq!(
        policy.find("GET", &target).unwrap().access,
        &Access::ANY_KEY
    );
}
