//! KeywardLayer on a tonic server and on an axum router: identities in the
//! extensions, each denial as the caller's protocol expects.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, StatusCode};
use keyward_client::{CredentialSource, Identity, KeywardLayer, Verifier, proto};
use keyward_testkit::{Db, eventually, free_port, on_both_databases, spawn_app};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

use crate::helpers::{bearer, client, create, create_with, current_verifier, verifier_config};

on_both_databases!(the_layer_on_a_tonic_server, the_layer_on_an_axum_router);

/// A credential with the key prefix and the right shape that no key has.
fn unknown_like(secret: &str) -> String {
    let last = secret.chars().last().unwrap();
    let other = secret
        .chars()
        .rev()
        .find(|c| *c != last && c.is_ascii_alphanumeric())
        .unwrap();
    format!("{}{other}", &secret[..secret.len() - 1])
}

async fn serve_tonic(layer: KeywardLayer, seen: Arc<Mutex<Option<Identity>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stack = tower::ServiceBuilder::new().layer(layer).map_request(
        move |request: Request<tonic::body::Body>| {
            *seen.lock().unwrap() = request.extensions().get::<Identity>().cloned();
            request
        },
    );
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(stack)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

async fn health_check(addr: SocketAddr, credential: Option<&str>) -> Result<(), tonic::Status> {
    let channel = keyward_testkit::connect(addr).await;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(credential) = credential {
        request
            .metadata_mut()
            .insert("authorization", credential.parse().unwrap());
    }
    HealthClient::new(channel).check(request).await.map(|_| ())
}

async fn the_layer_on_a_tonic_server(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let verifier = current_verifier(app.addr(), verifier_config()).await;
    let seen = Arc::new(Mutex::new(None));
    // keyward believes the stated address from a loopback caller while no
    // service token exists (as from a trusted token otherwise).
    let layer = KeywardLayer::new(verifier.clone())
        .scopes(|_| vec!["orders:read".into()])
        .client_ip(|_| Some("203.0.113.7".into()));
    let addr = serve_tonic(layer, Arc::clone(&seen)).await;

    let (key, secret, _) = create(&keys, "acct_tonic", &["orders:read"]).await;
    health_check(addr, Some(&bearer(&secret)))
        .await
        .expect("allowed");
    let identity = seen
        .lock()
        .unwrap()
        .take()
        .expect("the identity reaches the service");
    assert_eq!(identity.key_id(), key.id);
    assert_eq!(identity.account_id(), "acct_tonic");
    assert!(identity.has_scope("orders:read"));

    let status = health_check(addr, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "Invalid or missing API key.");
    assert!(
        seen.lock().unwrap().is_none(),
        "a denied call never reaches the service"
    );

    let (_, other, _) = create(&keys, "acct_tonic", &["portfolio:read"]).await;
    let status = health_check(addr, Some(&bearer(&other))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "This key does not have the required scope."
    );

    let limit = Some(proto::RateLimit {
        requests: 1,
        per_seconds: 3600,
    });
    let (_, limited, _) = create_with(&keys, "acct_tonic", &["orders:read"], limit).await;
    health_check(addr, Some(&bearer(&limited)))
        .await
        .expect("first use");
    let status = health_check(addr, Some(&bearer(&limited)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");

    // Bad keys go to keyward every time, so its ban engages.
    let bad = bearer(&unknown_like(&secret));
    assert!(
        eventually(Duration::from_secs(10), async || {
            health_check(addr, Some(&bad))
                .await
                .is_err_and(|s| s.code() == Code::ResourceExhausted)
        })
        .await,
        "repeated bad keys are banned"
    );

    // A verifier that cannot reach keyward fails closed: UNAVAILABLE.
    let nowhere = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let lost = Verifier::new(client(nowhere), verifier_config()).unwrap();
    let addr = serve_tonic(KeywardLayer::new(lost.clone()), Arc::default()).await;
    let status = health_check(addr, Some(&bearer(&secret)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    lost.shutdown().await;
    verifier.shutdown().await;
}

async fn whoami(Extension(identity): Extension<Identity>) -> String {
    format!("{} {}", identity.key_id(), identity.account_id())
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON: {}", self.body))
    }
}

async fn get_with(router: &Router, uri: &str, header: Option<(&str, &str)>) -> Reply {
    let mut request = Request::builder().uri(uri);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = router
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn the_layer_on_an_axum_router(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let verifier = current_verifier(app.addr(), verifier_config()).await;
    let layer = KeywardLayer::new(verifier.clone())
        .credential_sources(vec![
            CredentialSource::Authorization,
            CredentialSource::Header(http::HeaderName::from_static("x-api-key")),
            CredentialSource::Query("api_key".into()),
        ])
        .client_ip(|_| Some("203.0.113.8".into()))
        .scopes(|parts| {
            if parts.uri.path() == "/admin" {
                vec!["orders:write".into()]
            } else {
                vec!["orders:read".into()]
            }
        });
    let router = Router::new()
        .route("/orders", get(whoami))
        .route("/admin", get(whoami))
        .layer(layer);

    let (key, secret, _) = create(&keys, "acct_axum", &["orders:read"]).await;
    for header in [
        Some(("authorization", bearer(&secret))),
        Some(("x-api-key", secret.clone())),
        None,
    ] {
        let uri = if header.is_none() {
            format!("/orders?api_key={secret}")
        } else {
            "/orders".to_owned()
        };
        let reply = get_with(
            &router,
            &uri,
            header.as_ref().map(|(n, v)| (*n, v.as_str())),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body, format!("{} acct_axum", key.id));
    }

    let reply = get_with(&router, "/orders", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["code"], "unauthorized");
    assert_eq!(reply.json()["message"], "Invalid or missing API key.");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    assert_eq!(reply.headers["content-type"], "application/json");

    let reply = get_with(&router, "/admin", Some(("authorization", &bearer(&secret)))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["code"], "forbidden");
    assert!(reply.headers.get("www-authenticate").is_none());

    let limit = Some(proto::RateLimit {
        requests: 1,
        per_seconds: 3600,
    });
    let (_, limited, _) = create_with(&keys, "acct_axum", &["orders:read"], limit).await;
    let limited = bearer(&limited);
    let first = get_with(&router, "/orders", Some(("authorization", &limited))).await;
    assert_eq!(first.status, StatusCode::OK);
    let reply = get_with(&router, "/orders", Some(("authorization", &limited))).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["code"], "rate_limit_exceeded");
    let retry: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry), "{retry}");

    // Bad keys always go to keyward: the ban engages and is reported.
    let bad = bearer(&unknown_like(&secret));
    let remote_before = verifier.stats().remote_calls;
    let mut tries = 0;
    let banned = loop {
        tries += 1;
        let reply = get_with(&router, "/orders", Some(("authorization", &bad))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        if reply.json()["code"] == "too_many_failed_auth" {
            break reply;
        }
        assert!(tries < 50, "no ban after {tries} bad keys");
    };
    assert!(banned.headers.get("retry-after").is_some());
    assert_eq!(verifier.stats().remote_calls - remote_before, tries);

    // Failing closed: 503 with the local message.
    let nowhere = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let lost = Verifier::new(client(nowhere), verifier_config()).unwrap();
    let router = Router::new()
        .route("/orders", get(whoami))
        .layer(KeywardLayer::new(lost.clone()));
    let reply = get_with(
        &router,
        "/orders",
        Some(("authorization", &bearer(&secret))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["code"], "unavailable");
    lost.shutdown().await;
    verifier.shutdown().await;
}
