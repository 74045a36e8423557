//! Bulk setup for the memory measurement: a million keys through CreateKey
//! would take minutes, so rows go straight into the database (after the
//! store has run its migrations), with secrets generated exactly as keyward
//! generates them.

use keyward::config::Config;
use keyward::domain::{KeyId, UnixMillis};
use keyward::storage::{self, Backend, DatabaseUrl, PoolSettings};

use super::BenchError;

const BATCH: usize = 500;

/// Inserts `count` keys (ten per account) and returns their secrets.
pub async fn insert_keys(database_url: &str, count: u64) -> Result<Vec<String>, BenchError> {
    let url = DatabaseUrl::parse(database_url).map_err(BenchError::Setup)?;
    // Opening the store creates the schema.
    drop(
        storage::open(&url, &PoolSettings::default())
            .await
            .map_err(|e| BenchError::Setup(e.to_string()))?,
    );
    let format = Config::default().key_format;
    let now = UnixMillis::now().0;
    let mut secrets = Vec::with_capacity(count as usize);
    let mut rows = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (secret, digest, start) = format
            .generate()
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        rows.push((
            KeyId::generate().to_string(),
            format!("memory_{}", i / 10),
            digest.as_bytes().to_vec(),
            start,
        ));
        secrets.push(secret.into_exposed());
    }
    match url.backend() {
        Backend::Postgres => insert_postgres(database_url, &rows, now).await?,
        Backend::Sqlite => insert_sqlite(database_url, &rows, now).await?,
    }
    Ok(secrets)
}

type Row = (String, String, Vec<u8>, String);

async fn insert_sqlite(url: &str, rows: &[Row], now: i64) -> Result<(), BenchError> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(BATCH) {
        let mut accounts = sqlx::QueryBuilder::new("INSERT OR IGNORE INTO accounts (id) ");
        accounts.push_values(chunk, |mut b, row| {
            b.push_bind(&row.1);
        });
        accounts.build().execute(&mut *tx).await?;
        let mut keys = sqlx::QueryBuilder::new(
            "INSERT INTO api_keys (id, account_id, name, key_hash, start, scopes, created_at) ",
        );
        keys.push_values(chunk, |mut b, row| {
            b.push_bind(&row.0)
                .push_bind(&row.1)
                .push_bind("memory")
                .push_bind(&row.2)
                .push_bind(&row.3)
                .push_bind("portfolio:read orders:write")
                .push_bind(now);
        });
        keys.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    pool.close().await;
    Ok(())
}

async fn insert_postgres(url: &str, rows: &[Row], now: i64) -> Result<(), BenchError> {
    let pool = sqlx::PgPool::connect(url).await?;
    for chunk in rows.chunks(BATCH * 20) {
        let ids: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
        let accounts: Vec<&str> = chunk.iter().map(|r| r.1.as_str()).collect();
        let hashes: Vec<&[u8]> = chunk.iter().map(|r| r.2.as_slice()).collect();
        let starts: Vec<&str> = chunk.iter().map(|r| r.3.as_str()).collect();
        sqlx::query("INSERT INTO accounts (id) SELECT DISTINCT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING")
            .bind(&accounts)
            .execute(&pool)
            .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, key_hash, start, scopes, created_at) \
             SELECT id, account_id, 'memory', key_hash, start, 'portfolio:read orders:write', $5 \
             FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[]) AS t(id, account_id, key_hash, start)",
        )
        .bind(&ids)
        .bind(&accounts)
        .bind(&hashes)
        .bind(&starts)
        .bind(now)
        .execute(&pool)
        .await?;
    }
    pool.close().await;
    Ok(())
}
