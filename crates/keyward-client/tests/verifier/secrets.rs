//! Neither a key's secret nor the service token is kept or shown.

use keyward_client::ClientConfig;
use keyward_testkit::{Db, on_both_databases, spawn_app};

use crate::helpers::{bearer, cache, client, create, current_verifier, verifier_config};

on_both_databases!(debug_output_shows_no_secret);

async fn debug_output_shows_no_secret(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let verifier = current_verifier(app.addr(), verifier_config()).await;
    let (_, secret, created) = create(&keys, "acct_secret", &["orders:read"]).await;
    let credential = bearer(&secret);
    cache(&verifier, &credential, &["orders:read"], created).await;
    let allowed = verifier.verify(&credential, &["orders:read"]).await;
    let denied = verifier.verify(&credential, &["portfolio:read"]).await;
    // The random part: whatever follows the key's visible start.
    let body = &secret[secret.len() - 16..];
    let config = ClientConfig::new(format!("http://{}", app.addr())).token("tok_never_shown");
    let shown = format!(
        "{verifier:?} {allowed:?} {denied:?} {config:?} {:?}",
        verifier.client()
    );
    assert!(!shown.contains(body), "{shown}");
    assert!(!shown.contains("tok_never_shown"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(shown.contains("cached_answers: 1"), "{shown}");
    verifier.shutdown().await;
}
