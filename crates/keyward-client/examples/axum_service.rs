//! An axum HTTP service protected by keyward: `GET /orders` needs
//! `orders:read`, anything else `orders:write`. The handler reads who
//! called from the request's extensions.
//!
//! ```text
//! KEYWARD_TOKEN=<service token> cargo run -p keyward-client --example axum_service -- http://127.0.0.1:50051
//! curl -H "authorization: Bearer <key>" http://127.0.0.1:8080/orders
//! ```

use axum::routing::get;
use axum::{Extension, Router};
use keyward_client::{Client, ClientConfig, Identity, KeywardLayer, Verifier, VerifierConfig};

async fn orders(Extension(identity): Extension<Identity>) -> String {
    format!("orders of {}\n", identity.account_id())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("KEYWARD_ENDPOINT").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());

    let mut config = ClientConfig::new(endpoint);
    config.token = std::env::var("KEYWARD_TOKEN").ok();
    let verifier = Verifier::new(Client::connect_lazy(config)?, VerifierConfig::default())?;
    let layer = KeywardLayer::new(verifier.clone()).scopes(|parts| {
        let scope = if parts.method == http::Method::GET {
            "orders:read"
        } else {
            "orders:write"
        };
        vec![scope.to_owned()]
    });

    let app = Router::new()
        .route("/orders", get(orders).post(orders))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("serving HTTP on {listen}");
    axum::serve(listener, app).await?;
    verifier.shutdown().await;
    Ok(())
}
