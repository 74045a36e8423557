//! OUT_OF_RANGE: the events the verifier missed were pruned; it empties its
//! cache and starts again from 0.

use std::time::Duration;

use keyward::domain::UnixMillis;
use keyward::storage::{self, PoolSettings};
use keyward_client::{DenialReason, proto};
use keyward_testkit::stalling_proxy::{Hold, StallingProxy};
use keyward_testkit::{Db, eventually, on_both_databases, spawn_app};
use tonic::Code;

use crate::helpers::{bearer, cache, client, create, current_verifier, revoke, verifier_config};

on_both_databases!(a_pruned_gap_empties_the_cache);

/// The verifier holds answers for keys A and C; its stream stalls; C is
/// revoked and the log is pruned past the revocation. When the network
/// comes back the verifier cannot resume (OUT_OF_RANGE): it must forget
/// everything, so C is denied, and A still works.
async fn a_pruned_gap_empties_the_cache(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    let keys = client(app.addr());
    let proxy = StallingProxy::start(app.addr()).await;
    let verifier = current_verifier(proxy.addr(), verifier_config()).await;
    // An event before the gap, so there is a position to resume from.
    let (key_d, _, _) = create(&keys, "acct_d", &[]).await;
    revoke(&keys, &key_d).await;
    let (_, secret_a, _) = create(&keys, "acct_a", &[]).await;
    let (key_c, secret_c, created) = create(&keys, "acct_c", &[]).await;
    let (a, c) = (bearer(&secret_a), bearer(&secret_c));
    cache(&verifier, &a, &[], created).await;
    cache(&verifier, &c, &[], created).await;
    assert_eq!(verifier.cached_answers(), 2);

    proxy.hold(Hold::All);
    let resyncs = verifier.stats().resyncs;
    let last = revoke(&keys, &key_c).await;
    assert!(last >= 2);
    // The pruner (on any replica) removes the whole log, the revocation
    // included, before the verifier has seen it.
    let store = storage::open(&app.database.database_url(), &PoolSettings::default())
        .await
        .unwrap();
    store.prune_events(UnixMillis(i64::MAX)).await.unwrap();
    // The gap is gone: a stream resuming before the revocation is refused.
    let refused = match keys
        .watch_revocations(proto::WatchRevocationsRequest {
            after_seq: last - 1,
            ..Default::default()
        })
        .await
    {
        Err(keyward_client::Error::Status(status)) => status.code() == Code::OutOfRange,
        Ok(mut stream) => {
            matches!(stream.message().await, Err(status) if status.code() == Code::OutOfRange)
        }
        Err(_) => false,
    };
    assert!(refused, "the revocation is pruned");
    proxy.cut();
    proxy.release();

    assert!(
        eventually(Duration::from_secs(20), async || verifier.stats().resyncs
            > resyncs
            && verifier.is_current())
        .await,
        "resyncs: {:?}",
        verifier.stats()
    );
    let verdict = verifier.verify(&c, &[] as &[&str]).await;
    assert_eq!(
        verdict.denial().map(|d| d.reason),
        Some(DenialReason::Revoked),
        "{verdict:?}"
    );
    assert!(verifier.verify(&a, &[] as &[&str]).await.is_allowed());
    verifier.shutdown().await;
}
