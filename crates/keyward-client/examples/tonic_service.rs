//! A tonic gRPC service (here: the standard health service) protected by
//! keyward. Every call needs a key with `health:read`.
//!
//! ```text
//! KEYWARD_TOKEN=<service token> cargo run -p keyward-client --example tonic_service -- http://127.0.0.1:50051
//! grpcurl -plaintext -H "authorization: Bearer <key>" 127.0.0.1:50061 grpc.health.v1.Health/Check
//! ```

use keyward_client::{Client, ClientConfig, KeywardLayer, Verifier, VerifierConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("KEYWARD_ENDPOINT").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:50061".into());

    let mut config = ClientConfig::new(endpoint);
    config.token = std::env::var("KEYWARD_TOKEN").ok();
    let verifier = Verifier::new(Client::connect_lazy(config)?, VerifierConfig::default())?;
    let layer = KeywardLayer::new(verifier.clone()).scopes(|_| vec!["health:read".into()]);

    let (_, health) = tonic_health::server::health_reporter();
    println!("serving gRPC on {listen}");
    tonic::transport::Server::builder()
        .layer(layer)
        .add_service(health)
        .serve(listen.parse()?)
        .await?;
    verifier.shutdown().await;
    Ok(())
}
