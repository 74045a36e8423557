//! `keyward-floor ADDRESS`: the floor keyward is measured against. A bare
//! tonic server of the same tonic, tokio and tonic-health versions as
//! keyward, serving only `grpc.health.v1.Health` (SERVING), with tonic's
//! defaults and tokio's default runtime, as a dozen-line service would. What
//! keyward's answers cost beyond this is what keyward's own layers cost.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address: std::net::SocketAddr = std::env::args()
        .nth(1)
        .ok_or("usage: keyward-floor ADDRESS (e.g. 127.0.0.1:50052)")?
        .parse()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .add_service(health)
        .serve(address)
        .await?;
    Ok(())
}
