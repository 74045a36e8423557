-- Accounts exist so that CreateKey can serialize on one row per account.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY NOT NULL
);

-- Times are Unix milliseconds. key_hash is SHA-256 of the whole secret; the
-- secret itself is never stored.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    start TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rate_limit_requests INTEGER,
    rate_limit_per_seconds INTEGER,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER
);

CREATE INDEX api_keys_by_account ON api_keys (account_id, id);

-- The event log of changes that remove or alter access. AUTOINCREMENT keeps
-- sequence numbers from ever being reused after pruning. SQLite has one
-- writer at a time, so sequence order is commit order.
CREATE TABLE key_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    key_hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL
);

CREATE INDEX key_events_by_time ON key_events (at);

-- Events up to pruned_through have been deleted by retention.
CREATE TABLE feed_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
);

INSERT INTO feed_state (id, pruned_through) VALUES (1, 0);
