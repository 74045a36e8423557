//! The statements both backends run as they are. sqlx binds `$N`
//! placeholders on SQLite as on PostgreSQL, and the two schemas have the same
//! tables and columns (BLOB and BYTEA both take `&[u8]`; SQLite's INTEGER and
//! PostgreSQL's BIGINT both take `i64`), so one text serves both. Statements
//! whose SQL differs stay in `sqlite.rs` and `postgres.rs`, each with the
//! reason.
//!
//! Each statement names what it binds, in placeholder order.

/// The columns of [`KeyRow`](super::KeyRow), as a literal so statements stay
/// `&'static str`.
macro_rules! key_columns {
    () => {
        "id, account_id, name, key_hash, start, scopes, rate_limit_requests, \
         rate_limit_per_seconds, created_at, expires_at, revoked_at, last_used_at, \
         metadata, allowed_networks, rotated_from, quota_requests, quota_refill, \
         quota_period, quota_used"
    };
}
pub(super) use key_columns;

/// The columns of [`EventRow`](super::EventRow).
macro_rules! event_columns {
    () => {
        "seq, key_id, account_id, key_hash, kind, at"
    };
}

/// A key of an account, as a literal so PostgreSQL can add `FOR UPDATE`.
/// Binds: key id, account id.
macro_rules! key_in_account {
    () => {
        concat!(
            "SELECT ",
            $crate::storage::statements::key_columns!(),
            " FROM api_keys WHERE id = $1 AND account_id = $2"
        )
    };
}
pub(super) use key_in_account;

// Keys

/// Binds: account id.
pub(super) const INSERT_ACCOUNT: &str =
    "INSERT INTO accounts (id) VALUES ($1) ON CONFLICT DO NOTHING";

/// Keys of an account neither revoked nor expired nor rotated (a key that
/// another key names in `rotated_from` is in its grace period and leaves
/// its place to that successor). Written as live keys minus live keys with
/// a successor, found from the successors' side by primary key, so that it
/// stays linear in the account's keys without an index on `rotated_from`
/// (a `NOT EXISTS` per key is quadratic on SQLite, and so is naming `k`'s
/// account: SQLite would then scan both sides by account). A successor is
/// always in its old key's account. Binds: account id, now.
pub(super) const COUNT_ACTIVE_KEYS: &str = "SELECT \
     (SELECT COUNT(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL \
     AND (expires_at IS NULL OR expires_at > $2)) \
     - (SELECT COUNT(DISTINCT k.id) FROM api_keys AS s JOIN api_keys AS k ON k.id = s.rotated_from \
     WHERE s.account_id = $1 AND s.rotated_from IS NOT NULL AND k.revoked_at IS NULL \
     AND (k.expires_at IS NULL OR k.expires_at > $2))";

/// The key that replaced a key, if any (the first, should there be more).
/// Binds: account id, the old key's id.
pub(super) const SUCCESSOR_OF: &str = "SELECT id FROM api_keys \
     WHERE account_id = $1 AND rotated_from = $2 ORDER BY id LIMIT 1";

/// Binds: expires at, key id.
pub(super) const SET_EXPIRES_AT: &str = "UPDATE api_keys SET expires_at = $1 WHERE id = $2";

/// Binds: revoked at, key id.
pub(super) const SET_REVOKED_AT: &str = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2";

/// Binds: key hash.
pub(super) const DIGEST_EXISTS: &str = "SELECT COUNT(*) FROM api_keys WHERE key_hash = $1";

/// Binds: id, account id, name, key hash, start, scopes, rate limit requests,
/// rate limit seconds, created at, expires at, metadata, allowed networks,
/// rotated from, quota requests, quota refill.
pub(super) const INSERT_KEY: &str = "INSERT INTO api_keys (id, account_id, name, key_hash, \
     start, scopes, rate_limit_requests, rate_limit_per_seconds, created_at, expires_at, \
     metadata, allowed_networks, rotated_from, quota_requests, quota_refill) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Binds: key id, account id.
pub(super) const KEY_IN_ACCOUNT: &str = key_in_account!();

/// Binds: name, scopes, rate limit requests, rate limit seconds, metadata,
/// allowed networks, key id, quota requests, quota refill, quota period,
/// quota used.
pub(super) const UPDATE_KEY: &str = "UPDATE api_keys SET name = $1, scopes = $2, \
     rate_limit_requests = $3, rate_limit_per_seconds = $4, metadata = $5, \
     allowed_networks = $6, quota_requests = $8, quota_refill = $9, quota_period = $10, \
     quota_used = $11 WHERE id = $7";

/// A page of an account's keys in id order. Binds: account id, whether
/// revoked keys count, the id to start after (`""` for the first page), limit.
pub(super) const LIST_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE account_id = $1 AND ($2 OR revoked_at IS NULL) \
     AND id > $3 ORDER BY id LIMIT $4"
);

/// Binds: key hash.
pub(super) const KEY_BY_DIGEST: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE key_hash = $1"
);

/// Binds: key id.
pub(super) const KEY_BY_ID: &str =
    concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1");

// The event log

/// `seq` is left out: SQLite's AUTOINCREMENT or PostgreSQL's trigger (under
/// its ordering lock) assigns it. Binds: key id, account id, key hash, kind,
/// at. Returns the sequence.
pub(super) const INSERT_EVENT: &str = "INSERT INTO key_events (key_id, account_id, key_hash, kind, at) \
     VALUES ($1, $2, $3, $4, $5) RETURNING seq";

/// Binds: sequence to read after, limit.
pub(super) const EVENTS_AFTER: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM key_events WHERE seq > $1 ORDER BY seq LIMIT $2"
);

/// Binds nothing.
pub(super) const PRUNED_THROUGH: &str = "SELECT pruned_through FROM feed_state WHERE id = 1";

/// The last event older than a cutoff (NULL when none): pruning removes a
/// prefix of the log up to it. Binds: cutoff.
pub(super) const LAST_EVENT_BEFORE: &str = "SELECT MAX(seq) FROM key_events WHERE at < $1";

/// Binds: the last sequence to delete.
pub(super) const DELETE_EVENTS_THROUGH: &str = "DELETE FROM key_events WHERE seq <= $1";

// The audit trail (`key_audit`)

/// `seq` is assigned by the table. Binds: key id, account id, kind, at,
/// actor, peer.
pub(super) const INSERT_AUDIT: &str = "INSERT INTO key_audit (key_id, account_id, kind, at, actor, peer) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// A page of an account's trail, oldest first, optionally of one key. Binds:
/// account id, key id (`""`: every key), the sequence to read after, limit.
pub(super) const AUDIT_PAGE: &str = "SELECT seq, key_id, account_id, kind, at, actor, peer \
     FROM key_audit WHERE account_id = $1 AND ($2 = '' OR key_id = $2) AND seq > $3 \
     ORDER BY seq LIMIT $4";

/// Binds: cutoff.
pub(super) const DELETE_AUDIT_BEFORE: &str = "DELETE FROM key_audit WHERE at < $1";
