use std::net::SocketAddr;
use std::time::Duration;

use keyward_client::proto;
use keyward_client::{Client, ClientConfig, Verifier, VerifierConfig};

/// A client for the server at `addr`.
pub fn client(addr: SocketAddr) -> Client {
    Client::connect_lazy(ClientConfig::new(format!("http://{addr}"))).expect("client config")
}

/// A verifier config for tests: the default 2 s bound, quick flushes.
pub fn verifier_config() -> VerifierConfig {
    VerifierConfig {
        usage_flush_interval: Duration::from_millis(200),
        ..VerifierConfig::default()
    }
}

/// A verifier on `addr` that has become current.
pub async fn current_verifier(addr: SocketAddr, config: VerifierConfig) -> Verifier {
    let verifier = Verifier::new(client(addr), config).expect("verifier");
    assert!(
        verifier.wait_current(Duration::from_secs(10)).await,
        "the verifier becomes current: {verifier:?}"
    );
    verifier
}

/// Creates a key; returns it, its secret and the creation's revision.
pub async fn create(client: &Client, account: &str, scopes: &[&str]) -> (proto::Key, String, u64) {
    create_with(client, account, scopes, None).await
}

pub async fn create_with(
    client: &Client,
    account: &str,
    scopes: &[&str],
    rate_limit: Option<proto::RateLimit>,
) -> (proto::Key, String, u64) {
    let response = client
        .create_key(proto::CreateKeyRequest {
            account_id: account.into(),
            name: "client test key".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            rate_limit,
            ..Default::default()
        })
        .await
        .expect("CreateKey");
    (
        response.key.expect("key"),
        response.secret,
        response.revision,
    )
}

pub async fn revoke(client: &Client, key: &proto::Key) -> u64 {
    client
        .revoke_key(proto::RevokeKeyRequest {
            account_id: key.account_id.clone(),
            key_id: key.id.clone(),
        })
        .await
        .expect("RevokeKey")
        .revision
}

pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// Verifies until an answer comes from the cache. (An answer kept just
/// before the stream delivers an event about the key is dropped by it, as
/// any event about the key drops its answers; so retry.)
/// `revision`: the key's latest write, which the stream must have applied
/// first (its event would drop the answer).
pub async fn cache(verifier: &Verifier, credential: &str, scopes: &[&str], revision: u64) {
    assert!(
        keyward_testkit::eventually(Duration::from_secs(10), async || verifier
            .applied_revision()
            >= revision)
        .await,
        "the stream reaches {revision}: {verifier:?}"
    );
    let cached = keyward_testkit::eventually(Duration::from_secs(10), async || {
        let before = verifier.stats().local_hits;
        let verdict = verifier.verify(credential, scopes).await;
        assert!(verdict.is_allowed(), "{verdict:?}");
        verifier.stats().local_hits > before
    })
    .await;
    assert!(cached, "the answer is kept: {verifier:?}");
}
