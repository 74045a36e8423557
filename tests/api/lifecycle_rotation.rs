//! The key lifecycle (issue 17): RotateKey with a grace period and
//! ImportKeys of keys another system holds as SHA-256 digests, on both
//! databases, across replicas, and through the operator CLI.

use std::time::{Duration, Instant};

use keyward::proto::{self, denial::Reason};
use prost_types::Timestamp;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::helpers::{
    Db, TestApp, TestDatabase, assert_invalid_argument, eventually, reason, spawn_app,
    spawn_app_with, spawn_on, stored_last_used_at, test_config,
};
use crate::on_both_databases;

on_both_databases!(
    rotation_keeps_the_old_key_until_the_grace_period_ends,
    rotation_without_grace_revokes_the_old_key_at_once,
    bad_grace_periods_are_refused_and_write_nothing,
    rotating_a_revoked_expired_or_rotated_key_is_refused_and_writes_nothing,
    a_key_in_its_grace_period_leaves_its_place_for_the_limit,
    racing_rotations_of_one_key_leave_one_successor,
    imported_secrets_authenticate,
    bad_imports_are_refused_whole_and_write_nothing,
    an_import_over_the_key_limit_is_refused_whole,
    racing_imports_of_one_digest_store_it_once,
);

/// Where the test client claims requests come from (inside the networks
/// the rotated keys are given, so an allowlist never gets in the way).
const CLIENT_IP: &str = "10.1.2.3";

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn millis(timestamp: &Timestamp) -> i64 {
    timestamp.seconds * 1000 + i64::from(timestamp.nanos / 1_000_000)
}

fn timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn grace(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

async fn authenticate(
    app: &mut TestApp,
    secret: &str,
    min_revision: u64,
) -> proto::AuthenticateResponse {
    app.keys
        .authenticate(proto::AuthenticateRequest {
            credential: secret.into(),
            client_ip: CLIENT_IP.into(),
            min_revision,
            ..Default::default()
        })
        .await
        .expect("Authenticate")
        .into_inner()
}

async fn rotate(
    app: &mut TestApp,
    account: &str,
    key_id: &str,
    grace_period: Option<prost_types::Duration>,
) -> Result<proto::RotateKeyResponse, tonic::Status> {
    app.keys
        .rotate_key(proto::RotateKeyRequest {
            account_id: account.into(),
            key_id: key_id.into(),
            grace_period,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn all_keys(app: &mut TestApp, account: &str) -> Vec<proto::Key> {
    app.keys
        .list_keys(proto::ListKeysRequest {
            account_id: account.into(),
            include_revoked: true,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListKeys")
        .into_inner()
        .keys
}

async fn create_with(app: &mut TestApp, request: proto::CreateKeyRequest) -> (proto::Key, String) {
    let response = app
        .keys
        .create_key(request)
        .await
        .expect("CreateKey")
        .into_inner();
    (response.key.unwrap(), response.secret)
}

/// Runs one statement on the test's database (what no RPC of this branch
/// can set yet, and raw reads).
async fn execute(database: &TestDatabase, statement: &str) {
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

/// A key's stored metadata and allowed networks columns.
async fn stored_labels(database: &TestDatabase, key_id: &str) -> (String, String) {
    let query = "SELECT metadata, allowed_networks FROM api_keys WHERE id = $1";
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            let row = sqlx::query_as(query)
                .bind(key_id)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            row
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let row = sqlx::query_as(query)
                .bind(key_id)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            row
        }
    }
}

/// Every event of the log, as (key id, kind).
async fn stored_events(database: &TestDatabase) -> Vec<(String, String)> {
    let query = "SELECT key_id, kind FROM key_events ORDER BY seq";
    match database.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            let rows = sqlx::query_as(query).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let rows = sqlx::query_as(query).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }
}

// RotateKey

async fn rotation_keeps_the_old_key_until_the_grace_period_ends(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let (old, old_secret) = create_with(
        &mut app,
        proto::CreateKeyRequest {
            account_id: "acct_r".into(),
            name: "deploy bot".into(),
            scopes: vec!["orders:read".into()],
            rate_limit: Some(proto::RateLimit {
                requests: 100,
                per_seconds: 60,
            }),
            ..Default::default()
        },
    )
    .await;
    // Labels the new key must carry over (set in the database: this
    // branch's CreateKey does not take them).
    execute(
        &app.database,
        &format!(
            "UPDATE api_keys SET metadata = '{{\"plan\":\"pro\"}}', \
             allowed_networks = '10.0.0.0/8' WHERE id = '{}'",
            old.id
        ),
    )
    .await;
    assert!(authenticate(&mut app, &old_secret, 0).await.allowed);

    let before = now_millis();
    let rotated = rotate(&mut app, "acct_r", &old.id, grace(3, 0))
        .await
        .expect("RotateKey");
    let after = now_millis();
    let new = rotated.key.clone().unwrap();
    let previous = rotated.previous.clone().unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(new.rotated_from, old.id);
    assert_eq!(new.name, "deploy bot");
    assert_eq!(new.scopes, old.scopes);
    assert_eq!(new.rate_limit, old.rate_limit);
    assert_eq!(new.expires_at, None);
    assert!(new.start.starts_with("cc_") && rotated.secret.starts_with(&new.start));
    assert_ne!(rotated.secret, old_secret);
    assert_eq!(
        stored_labels(&app.database, &new.id).await,
        ("{\"plan\":\"pro\"}".to_owned(), "10.0.0.0/8".to_owned())
    );
    assert_eq!(previous.id, old.id);
    assert_eq!(previous.revoked_at, None);
    let ends = millis(
        previous
            .expires_at
            .as_ref()
            .expect("the old key now expires"),
    );
    assert!(
        (before + 3000..=after + 3000).contains(&ends),
        "grace ends at {ends}, rotation ran {before}..{after}"
    );
    assert!(rotated.revision > 0);
    assert_eq!(
        stored_events(&app.database).await,
        vec![(old.id.clone(), "rotated".to_owned())]
    );

    // Both work during the grace period; the old key's uses are recorded.
    let new_use = authenticate(&mut app, &rotated.secret, rotated.revision).await;
    assert!(new_use.allowed, "{new_use:?}");
    assert_eq!(new_use.key.as_ref().unwrap().rotated_from, old.id);
    let old_use = authenticate(&mut app, &old_secret, rotated.revision).await;
    assert!(old_use.allowed, "{old_use:?}");
    assert!(
        eventually(Duration::from_secs(2), async || {
            stored_last_used_at(&app.database, &old.id).await.is_some()
        })
        .await,
        "a use during the grace period updates the old key's last_used_at"
    );

    // Then the old key expires and the new one goes on.
    assert!(
        eventually(Duration::from_secs(6), async || {
            reason(&authenticate(&mut app, &old_secret, 0).await) == Reason::Expired
        })
        .await,
        "the old key expires when the grace period ends"
    );
    assert!(now_millis() >= ends);
    assert!(authenticate(&mut app, &rotated.secret, 0).await.allowed);
    let listed = all_keys(&mut app, "acct_r").await;
    assert_eq!(listed.len(), 2);
    app.shutdown().await;
}

async fn rotation_without_grace_revokes_the_old_key_at_once(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    for grace_period in [None, grace(0, 0)] {
        let (old, old_secret) = app.create_key("acct_z", &["orders:read"]).await;
        assert!(authenticate(&mut app, &old_secret, 0).await.allowed);
        let rotated = rotate(&mut app, "acct_z", &old.id, grace_period)
            .await
            .expect("RotateKey");
        let previous = rotated.previous.unwrap();
        assert!(previous.revoked_at.is_some(), "{grace_period:?}");
        assert_eq!(
            reason(&authenticate(&mut app, &old_secret, 0).await),
            Reason::Revoked
        );
        assert!(authenticate(&mut app, &rotated.secret, 0).await.allowed);
        let events = stored_events(&app.database).await;
        assert_eq!(
            events.last().unwrap(),
            &(old.id.clone(), "revoked".to_owned())
        );
    }
    app.shutdown().await;
}

async fn bad_grace_periods_are_refused_and_write_nothing(db: Db) {
    let mut config = test_config();
    config.max_rotation_grace = Duration::from_secs(3600);
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let (old, old_secret) = app.create_key("acct_g", &[]).await;
    for bad in [
        grace(3601, 0),
        grace(3600, 1),
        grace(-1, 0),
        grace(0, -1),
        grace(1, 1_000_000_000),
        grace(i64::MAX, 0),
    ] {
        let status = rotate(&mut app, "acct_g", &old.id, bad).await.unwrap_err();
        assert_invalid_argument(&status, "grace_period");
    }
    let status = rotate(&mut app, "acct_g", "not a key id", grace(60, 0))
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "key_id");
    let status = rotate(&mut app, "", &old.id, grace(60, 0))
        .await
        .unwrap_err();
    assert_invalid_argument(&status, "account_id");
    let status = rotate(&mut app, "acct_other", &old.id, grace(60, 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let keys = all_keys(&mut app, "acct_g").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].expires_at, None);
    assert!(stored_events(&app.database).await.is_empty());
    assert!(authenticate(&mut app, &old_secret, 0).await.allowed);
    // The maximum itself is allowed.
    rotate(&mut app, "acct_g", &old.id, grace(3600, 0))
        .await
        .expect("a grace period of exactly the maximum");
    app.shutdown().await;
}

async fn rotating_a_revoked_expired_or_rotated_key_is_refused_and_writes_nothing(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let account = "acct_p";
    let (revoked, _) = app.create_key(account, &[]).await;
    app.revoke(account, &revoked.id).await;
    let (expiring, expiring_secret) = create_with(
        &mut app,
        proto::CreateKeyRequest {
            account_id: account.into(),
            name: "short".into(),
            expires_at: Some(timestamp(now_millis() + 1000)),
            ..Default::default()
        },
    )
    .await;
    let (rotated_once, _) = app.create_key(account, &[]).await;
    let first = rotate(&mut app, account, &rotated_once.id, grace(3600, 0))
        .await
        .expect("the first rotation");
    let successor = first.key.unwrap().id;
    assert!(
        eventually(Duration::from_secs(5), async || {
            reason(&authenticate(&mut app, &expiring_secret, 0).await) == Reason::Expired
        })
        .await
    );
    let keys_before = all_keys(&mut app, account).await;
    let events_before = stored_events(&app.database).await;

    let status = rotate(&mut app, account, &revoked.id, grace(60, 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    let status = rotate(&mut app, account, &expiring.id, None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
    for grace_period in [grace(60, 0), None] {
        let status = rotate(&mut app, account, &rotated_once.id, grace_period)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status
                .message()
                .contains(&format!("already rotated; its successor is {successor}")),
            "{status:?}"
        );
    }

    assert_eq!(all_keys(&mut app, account).await, keys_before);
    assert_eq!(stored_events(&app.database).await, events_before);
    app.shutdown().await;
}

async fn a_key_in_its_grace_period_leaves_its_place_for_the_limit(db: Db) {
    let mut config = test_config();
    config.max_active_keys_per_account = 2;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    let account = "acct_l";
    let (first, _) = app.create_key(account, &[]).await;
    let (second, _) = app.create_key(account, &[]).await;
    let refused = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: account.into(),
            name: "third".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // At the limit, a rotation still goes through: its key takes the old
    // one's place.
    let rotated = rotate(&mut app, account, &first.id, grace(3600, 0))
        .await
        .expect("an account at its limit can rotate");
    // Three keys work now (the old one for an hour), two count.
    let refused = app
        .keys
        .create_key(proto::CreateKeyRequest {
            account_id: account.into(),
            name: "third".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // With one place free, the old key in its grace period does not take it.
    app.revoke(account, &second.id).await;
    app.create_key(account, &[]).await;
    assert_eq!(
        all_keys(&mut app, account)
            .await
            .iter()
            .filter(|key| key.revoked_at.is_none())
            .count(),
        3,
        "the rotated key, its successor {} and the new one",
        rotated.key.unwrap().id
    );
    app.shutdown().await;
}

async fn racing_rotations_of_one_key_leave_one_successor(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let account = "acct_race";
    for round in 0..10 {
        let (old, _) = app.create_key(account, &[]).await;
        let (mut first, mut second) = (app.keys.clone(), app.keys.clone());
        let request = |grace_seconds| proto::RotateKeyRequest {
            account_id: account.into(),
            key_id: old.id.clone(),
            grace_period: grace(grace_seconds, 0),
        };
        let (one, other) = tokio::join!(
            first.rotate_key(request(3600)),
            second.rotate_key(request(0))
        );
        let (won, lost) = match (one, other) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won.into_inner(), lost),
            outcome => panic!("round {round}: one rotation should win: {outcome:?}"),
        };
        assert_eq!(lost.code(), Code::FailedPrecondition, "{lost:?}");
        let successor = won.key.unwrap().id;
        assert!(lost.message().contains(&successor), "{lost:?}");
        let successors = all_keys(&mut app, account)
            .await
            .into_iter()
            .filter(|key| key.rotated_from == old.id)
            .count();
        assert_eq!(successors, 1, "round {round}");
    }
    app.shutdown().await;
}

/// Two replicas on one PostgreSQL database: a rotation that revokes on A
/// is denied on B within the freshness bound, and at once with the
/// response's revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_replica_reaches_the_other() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let config = test_config();
    let bound = config.feed.freshness_bound;
    let mut a = spawn_on(database.clone(), config.clone()).await;
    let mut b = spawn_on(database.clone(), config).await;
    for with_revision in [true, false] {
        let (old, old_secret) = a.create_key("acct_x", &[]).await;
        assert!(authenticate(&mut b, &old_secret, 0).await.allowed);
        let rotated = rotate(&mut a, "acct_x", &old.id, grace(0, 0))
            .await
            .expect("RotateKey");
        let started = Instant::now();
        if with_revision {
            let answer = authenticate(&mut b, &old_secret, rotated.revision).await;
            assert_eq!(reason(&answer), Reason::Revoked, "{answer:?}");
        } else {
            assert!(
                eventually(bound + Duration::from_millis(500), async || {
                    reason(&authenticate(&mut b, &old_secret, 0).await) == Reason::Revoked
                })
                .await,
                "B denies the old key within the freshness bound"
            );
            assert!(started.elapsed() <= bound + Duration::from_millis(500));
        }
        assert!(authenticate(&mut b, &rotated.secret, 0).await.allowed);
    }
    // A grace period reaches B as the old key's new expiry.
    let (old, old_secret) = a.create_key("acct_x", &[]).await;
    assert!(authenticate(&mut b, &old_secret, 0).await.allowed);
    let rotated = rotate(&mut a, "acct_x", &old.id, grace(1, 0))
        .await
        .expect("RotateKey");
    let answer = authenticate(&mut b, &old_secret, rotated.revision).await;
    assert!(answer.allowed);
    assert_eq!(
        answer.key.unwrap().expires_at,
        rotated.previous.unwrap().expires_at
    );
    assert!(
        eventually(Duration::from_secs(4), async || {
            reason(&authenticate(&mut b, &old_secret, 0).await) == Reason::Expired
        })
        .await
    );
    b.shutdown().await;
    a.shutdown().await;
}

// ImportKeys

/// A secret in the deployment's format (`cc_` and 64 hex digits), made
/// from `seed`, and its SHA-256 in lowercase hex.
fn outside_secret(seed: &str) -> (String, String) {
    let body = hex(&Sha256::digest(format!("outside {seed}").as_bytes()));
    let secret = format!("cc_{body}");
    let digest = hex(&Sha256::digest(secret.as_bytes()));
    (secret, digest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn imported(account: &str, seed: &str) -> (proto::ImportedKey, String) {
    let (secret, digest) = outside_secret(seed);
    (
        proto::ImportedKey {
            account_id: account.into(),
            name: format!("imported {seed}"),
            sha256_hex: digest,
            start: secret[..9].to_owned(),
            scopes: vec!["orders:read".into()],
            ..Default::default()
        },
        secret,
    )
}

async fn import(
    app: &mut TestApp,
    keys: Vec<proto::ImportedKey>,
) -> Result<proto::ImportKeysResponse, tonic::Status> {
    app.keys
        .import_keys(proto::ImportKeysRequest { keys })
        .await
        .map(tonic::Response::into_inner)
}

/// Two imports of one digest into different accounts at once (so no
/// account lock orders them): one stores it, the other is ALREADY_EXISTS
/// naming the position, never a server error. On PostgreSQL the loser's
/// check runs before the winner commits, and it is the unique index that
/// refuses it.
async fn racing_imports_of_one_digest_store_it_once(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    for round in 0..10 {
        let seed = format!("race {round}");
        let (one, secret) = imported("acct_race_a", &seed);
        let (other, _) = imported("acct_race_b", &seed);
        let (mut first, mut second) = (app.keys.clone(), app.keys.clone());
        let (a, b) = tokio::join!(
            first.import_keys(proto::ImportKeysRequest { keys: vec![one] }),
            second.import_keys(proto::ImportKeysRequest { keys: vec![other] })
        );
        let lost = match (a, b) {
            (Ok(_), Err(lost)) | (Err(lost), Ok(_)) => lost,
            outcome => panic!("round {round}: one import should win: {outcome:?}"),
        };
        assert_eq!(lost.code(), Code::AlreadyExists, "round {round}: {lost:?}");
        assert!(lost.message().contains("keys[0]"), "{lost:?}");
        assert!(app.authenticate(&secret, &[]).await.allowed);
    }
    app.shutdown().await;
}

async fn imported_secrets_authenticate(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let created_at = now_millis() - 86_400_000;
    let expires_at = now_millis() + 86_400_000;
    let (mut first, first_secret) = imported("acct_i", "one");
    first.created_at = Some(timestamp(created_at));
    first.expires_at = Some(timestamp(expires_at));
    first.rate_limit = Some(proto::RateLimit {
        requests: 5,
        per_seconds: 60,
    });
    first.metadata = [("plan".to_owned(), "pro".to_owned())].into();
    let (second, second_secret) = imported("acct_i", "two");
    let (third, third_secret) = imported("acct_j", "three");
    // This replica has met one of them before, unknown.
    assert_eq!(
        reason(&authenticate(&mut app, &second_secret, 0).await),
        Reason::UnknownKey
    );

    let response = import(&mut app, vec![first, second, third])
        .await
        .expect("ImportKeys");
    assert_eq!(response.keys.len(), 3);
    assert!(response.revision > 0);
    let key = &response.keys[0];
    assert_eq!(key.account_id, "acct_i");
    assert_eq!(key.name, "imported one");
    assert_eq!(key.start, first_secret[..9]);
    assert_eq!(millis(key.created_at.as_ref().unwrap()), created_at);
    assert_eq!(millis(key.expires_at.as_ref().unwrap()), expires_at);
    assert_eq!(key.rate_limit.unwrap().requests, 5);
    assert_eq!(
        stored_labels(&app.database, &key.id).await.0,
        "{\"plan\":\"pro\"}"
    );
    let events = stored_events(&app.database).await;
    assert_eq!(
        events,
        response
            .keys
            .iter()
            .map(|key| (key.id.clone(), "imported".to_owned()))
            .collect::<Vec<_>>()
    );

    for (secret, key) in [first_secret, second_secret, third_secret]
        .iter()
        .zip(&response.keys)
    {
        let answer = authenticate(&mut app, secret, 0).await;
        assert!(answer.allowed, "{answer:?}");
        let found = answer.key.unwrap();
        assert_eq!(found.id, key.id);
        assert_eq!(found.scopes, ["orders:read"]);
    }
    assert_eq!(all_keys(&mut app, "acct_i").await.len(), 2);
    assert_eq!(all_keys(&mut app, "acct_j").await.len(), 1);
    // The digests are stored as given: importing one again is refused.
    let (again, _) = imported("acct_k", "two");
    let status = import(&mut app, vec![again]).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().starts_with("keys[0]:"), "{status:?}");
    app.shutdown().await;
}

/// What makes one entry bad.
type Spoil = Box<dyn Fn(&mut proto::ImportedKey)>;

async fn bad_imports_are_refused_whole_and_write_nothing(db: Db) {
    let Some(mut app) = spawn_app(db).await else {
        return;
    };
    let account = "acct_b";
    // A digest that is already stored (in another account).
    let (existing, _) = imported("acct_elsewhere", "existing");
    import(&mut app, vec![existing.clone()])
        .await
        .expect("ImportKeys");
    let (good, good_secret) = imported(account, "good");
    let bad_entries: Vec<(&str, Spoil)> = vec![
        (
            "keys[1].sha256_hex",
            Box::new(|k| k.sha256_hex.replace_range(0..1, "g")),
        ),
        (
            "keys[1].sha256_hex",
            Box::new(|k| {
                k.sha256_hex.pop();
            }),
        ),
        ("keys[1].sha256_hex", Box::new(|k| k.sha256_hex.push('0'))),
        (
            "keys[1].sha256_hex",
            Box::new(|k| k.sha256_hex = k.sha256_hex.to_uppercase()),
        ),
        ("keys[1].sha256_hex", Box::new(|k| k.sha256_hex.clear())),
        (
            "keys[1].start",
            Box::new(|k| k.start = "sk_live_abc".into()),
        ),
        ("keys[1].start", Box::new(|k| k.start.clear())),
        (
            "keys[1].scopes",
            Box::new(|k| k.scopes = vec!["orders:nuke".into()]),
        ),
        ("keys[1].account_id", Box::new(|k| k.account_id.clear())),
        ("keys[1].name", Box::new(|k| k.name.clear())),
        (
            "keys[1].created_at",
            Box::new(|k| k.created_at = Some(timestamp(now_millis() + 3_600_000))),
        ),
        (
            "keys[1].expires_at",
            Box::new(|k| k.expires_at = Some(timestamp(now_millis() - 1000))),
        ),
        (
            "keys[1].expires_at",
            Box::new(|k| {
                k.expires_at = Some(Timestamp {
                    seconds: 1,
                    nanos: -1,
                })
            }),
        ),
        (
            "keys[1].rate_limit.requests",
            Box::new(|k| {
                k.rate_limit = Some(proto::RateLimit {
                    requests: 0,
                    per_seconds: 1,
                })
            }),
        ),
    ];
    let before = stored_events(&app.database).await;
    for (field, spoil) in &bad_entries {
        let (mut bad, _) = imported(account, "bad");
        spoil(&mut bad);
        let status = import(&mut app, vec![good.clone(), bad]).await.unwrap_err();
        assert_invalid_argument(&status, field);
    }
    // The same digest twice in the request, or one already stored.
    let (third, _) = imported(account, "third");
    for (keys, named) in [
        (vec![good.clone(), third.clone(), good.clone()], "keys[2]:"),
        (vec![good.clone(), existing.clone()], "keys[1]:"),
    ] {
        let status = import(&mut app, keys).await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert!(status.message().starts_with(named), "{status:?}");
    }
    // No keys, or more than 1,000.
    let status = import(&mut app, Vec::new()).await.unwrap_err();
    assert_invalid_argument(&status, "keys");
    let many: Vec<_> = (0..1001)
        .map(|i| imported(account, &format!("many {i}")).0)
        .collect();
    let status = import(&mut app, many).await.unwrap_err();
    assert_invalid_argument(&status, "keys");

    assert!(all_keys(&mut app, account).await.is_empty());
    assert_eq!(stored_events(&app.database).await, before);
    assert_eq!(
        reason(&authenticate(&mut app, &good_secret, 0).await),
        Reason::UnknownKey
    );
    app.shutdown().await;
}

async fn an_import_over_the_key_limit_is_refused_whole(db: Db) {
    let mut config = test_config();
    config.max_active_keys_per_account = 3;
    let Some(mut app) = spawn_app_with(db, config).await else {
        return;
    };
    app.create_key("acct_full", &[]).await;
    let keys: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|seed| imported("acct_full", seed).0)
        .chain([imported("acct_free", "d").0])
        .collect();
    let status = import(&mut app, keys.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("acct_full"), "{status:?}");
    assert_eq!(all_keys(&mut app, "acct_full").await.len(), 1);
    assert!(all_keys(&mut app, "acct_free").await.is_empty());
    // Up to the limit is fine.
    let response = import(&mut app, keys[1..].to_vec())
        .await
        .expect("ImportKeys");
    assert_eq!(response.keys.len(), 3);
    assert_eq!(all_keys(&mut app, "acct_full").await.len(), 3);
    app.shutdown().await;
}

/// A replica that remembered a digest as unknown accepts it right after
/// another replica imported it, given the import's revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reaches_a_replica_that_remembered_the_digest_as_unknown() {
    let Some(database) = TestDatabase::create(Db::Postgres).await else {
        return;
    };
    let mut a = spawn_on(database.clone(), test_config()).await;
    let mut b = spawn_on(database.clone(), test_config()).await;
    let (key, secret) = imported("acct_m", "moving over");
    for _ in 0..2 {
        assert_eq!(
            reason(&authenticate(&mut b, &secret, 0).await),
            Reason::UnknownKey
        );
    }
    let response = import(&mut a, vec![key]).await.expect("ImportKeys");
    let answer = authenticate(&mut b, &secret, response.revision).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.key.unwrap().id, response.keys[0].id);
    b.shutdown().await;
    a.shutdown().await;
}

// The operator CLI

/// Runs `keyward keys ARGS --server <app>` (management open on loopback).
async fn keys_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("keys")
        .args(args)
        .args(["--server", &format!("http://{}", app.addr())])
        .env_remove("KEYWARD_TOKEN")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rotates_with_a_grace_period() {
    let mut app = spawn_app(Db::Sqlite).await.unwrap();
    let (old, old_secret) = app.create_key("acct_cli", &["orders:read"]).await;
    let (ok, stdout, stderr) = keys_cli(
        &app,
        &[
            "rotate",
            "--account",
            "acct_cli",
            "--grace",
            "24h",
            &old.id,
            "--json",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let secret = shown["secret"].as_str().unwrap();
    assert!(authenticate(&mut app, secret, 0).await.allowed);
    assert!(authenticate(&mut app, &old_secret, 0).await.allowed);
    assert_eq!(shown["previous"]["id"], old.id.as_str());
    assert_eq!(shown["key"]["rotated_from"], old.id.as_str());
    assert_eq!(shown["previous"]["rotated_from"], serde_json::Value::Null);
    let ends = humantime::parse_rfc3339(shown["previous"]["expires_at"].as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expected = now_millis() / 1000 + 24 * 3600;
    assert!(
        (expected - 60..=expected).contains(&ends),
        "{ends} vs {expected}"
    );
    // Table output shows the secret once; a bad grace is the CLI's error.
    let (other, _) = app.create_key("acct_cli", &[]).await;
    let (ok, stdout, _) = keys_cli(&app, &["rotate", "--account", "acct_cli", &other.id]).await;
    assert!(ok);
    assert_eq!(
        stdout.matches("secret (shown only now").count(),
        1,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("rotated from {}", other.id)),
        "the table names the replaced key: {stdout}"
    );
    let (ok, _, stderr) = keys_cli(
        &app,
        &[
            "rotate",
            "--account",
            "acct_cli",
            "--grace",
            "soon",
            &other.id,
        ],
    )
    .await;
    assert!(!ok && stderr.contains("--grace"), "{stderr}");
    let (ok, _, stderr) = keys_cli(
        &app,
        &[
            "rotate",
            "--account",
            "acct_cli",
            "--grace",
            "8d",
            &other.id,
        ],
    )
    .await;
    assert!(!ok && stderr.contains("grace_period: at most"), "{stderr}");
    let (ok, _, stderr) = keys_cli(
        &app,
        &["rotate", "--account", "acct_cli", "--grace", "1h", &old.id],
    )
    .await;
    assert!(!ok && stderr.contains("FailedPrecondition"), "{stderr}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_json_lines_and_names_a_bad_line() {
    let mut app = spawn_app(Db::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let line = |seed: &str| {
        let (key, secret) = imported("acct_file", seed);
        let text = serde_json::json!({
            "account_id": key.account_id,
            "name": key.name,
            "sha256_hex": key.sha256_hex,
            "start": key.start,
            "scopes": key.scopes,
            "created_at": "2024-01-31T12:00:00Z",
            "expires_at": "2999-01-01T00:00:00Z",
            "rate_limit": {"requests": 10, "per_seconds": 60},
            "metadata": {"plan": "pro"},
        })
        .to_string();
        (text, secret)
    };
    let (first, first_secret) = line("file one");
    let (second, second_secret) = line("file two");

    // A bad third line: the batch is not sent.
    let bad_file = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad_file,
        format!("{first}\n\n{second}\n{{\"account_id\": \"acct_file\", \"nme\": 1}}\n"),
    )
    .unwrap();
    let (ok, _, stderr) = keys_cli(&app, &["import", bad_file.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(stderr.contains("imported 0 of 3 keys"), "{stderr}");
    assert!(stderr.contains("line 4:"), "{stderr}");
    assert!(stderr.contains("not sent"), "{stderr}");
    assert!(all_keys(&mut app, "acct_file").await.is_empty());

    // The good lines import, and their secrets work.
    let good_file = dir.path().join("good.jsonl");
    std::fs::write(&good_file, format!("{first}\n{second}\n")).unwrap();
    let (ok, stdout, stderr) = keys_cli(&app, &["import", good_file.to_str().unwrap()]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("imported 2 of 2 keys"), "{stdout}");
    assert!(
        stderr.contains("batch 1/1 (lines 1-2): imported 2 keys"),
        "{stderr}"
    );
    for secret in [first_secret, second_secret] {
        assert!(authenticate(&mut app, &secret, 0).await.allowed);
    }
    let keys = all_keys(&mut app, "acct_file").await;
    assert_eq!(
        millis(keys[0].created_at.as_ref().unwrap()),
        1_706_702_400_000
    );

    // Imported again: the server's refusal names the line.
    let (ok, _, stderr) = keys_cli(&app, &["import", good_file.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(stderr.contains("line 1: AlreadyExists"), "{stderr}");
    app.shutdown().await;
}

#[test]
fn the_maximum_grace_period_is_configured_in_whole_seconds_within_a_year() {
    use keyward::config::Config;
    assert_eq!(
        Config::default().max_rotation_grace,
        Duration::from_secs(7 * 24 * 3600)
    );
    let config = Config::parse("[keys]\nmax_rotation_grace_seconds = 0\n", "k.toml").unwrap();
    assert_eq!(config.max_rotation_grace, Duration::ZERO);
    for bad in ["31536001", "-1", "1.5", "\"7d\""] {
        let error = Config::parse(
            &format!("[keys]\nmax_rotation_grace_seconds = {bad}\n"),
            "k.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("keys.max_rotation_grace_seconds"),
            "{bad}: {error}"
        );
    }
}

/// RotateKey and ImportKeys are management RPCs: a credential is needed
/// once management is locked, and a user JWT acts only in its own account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_jwt_rotates_and_imports_only_in_its_own_account() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        "[auth]\nhot_path_requires_token = false\n\n[auth.jwt]\nissuers = [\"https://auth.example.test\"]\n\
         audiences = [\"keyward-test\"]\npublic_key_files = [\"{}\"]\n",
        fixture("rs256-test-public.pem")
    );
    let mut config = test_config();
    config.auth = keyward::config::Config::parse(&text, "auth.toml")
        .unwrap()
        .auth;
    let mut app = spawn_app_with(Db::Sqlite, config).await.unwrap();
    let private = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    let jwt = |account: &str| {
        let now = now_millis() / 1000;
        let claims = serde_json::json!({"sub": account, "iss": "https://auth.example.test",
            "aud": "keyward-test", "iat": now, "exp": now + 300});
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap()
    };
    fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    let (user, other) = (jwt("acct_user"), jwt("acct_other"));
    let mut created = Vec::new();
    for (account, token) in [("acct_user", &user), ("acct_other", &other)] {
        let request = proto::CreateKeyRequest {
            account_id: account.into(),
            name: "k".into(),
            ..Default::default()
        };
        let key = app.keys.create_key(bearer(request, token)).await.unwrap();
        created.push(key.into_inner().key.unwrap());
    }
    let rotation = |account: &str, key_id: &str| proto::RotateKeyRequest {
        account_id: account.into(),
        key_id: key_id.into(),
        grace_period: grace(60, 0),
    };

    let status = app
        .keys
        .rotate_key(bearer(rotation("acct_other", &created[1].id), &user))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = app
        .keys
        .rotate_key(rotation("acct_user", &created[0].id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mixed = vec![
        imported("acct_user", "jwt one").0,
        imported("acct_other", "jwt two").0,
    ];
    let status = app
        .keys
        .import_keys(bearer(proto::ImportKeysRequest { keys: mixed }, &user))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = app
        .keys
        .import_keys(proto::ImportKeysRequest {
            keys: vec![imported("acct_user", "jwt one").0],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(stored_events(&app.database).await.is_empty());

    app.keys
        .rotate_key(bearer(rotation("acct_user", &created[0].id), &user))
        .await
        .expect("its own key");
    let request = proto::ImportKeysRequest {
        keys: vec![imported("acct_user", "jwt one").0],
    };
    app.keys
        .import_keys(bearer(request, &user))
        .await
        .expect("into its own account");
    app.shutdown().await;
}
