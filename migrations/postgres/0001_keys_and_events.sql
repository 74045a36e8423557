-- Accounts exist so that CreateKey can lock one row per account
-- (SELECT ... FOR UPDATE) while it counts active keys.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY
);

-- Times are Unix milliseconds. key_hash is SHA-256 of the whole secret; the
-- secret itself is never stored.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    key_hash BYTEA NOT NULL UNIQUE,
    start TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rate_limit_requests BIGINT,
    rate_limit_per_seconds BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);

CREATE INDEX api_keys_by_account ON api_keys (account_id, id);

-- The event log of changes that remove or alter access.
CREATE SEQUENCE key_events_seq;

CREATE TABLE key_events (
    seq BIGINT PRIMARY KEY,
    key_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    key_hash BYTEA NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE INDEX key_events_by_time ON key_events (at);

-- Sequence numbers must become visible in order, or a follower that has read
-- seq 42 could skip a seq 41 that commits later. Every insert therefore takes
-- one transaction-scoped advisory lock before drawing its number: the lock
-- is held until commit, so the next writer draws a higher number only after
-- this one is visible. Writers of the log (revocations, key updates) are
-- rare; the cost is that they commit one at a time.
-- The NOTIFY is delivered at commit and is only a wake-up hint.
CREATE FUNCTION key_events_assign_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1801812343); -- 'keyw'
    NEW.seq := nextval('key_events_seq');
    PERFORM pg_notify('keyward_key_events', NEW.seq::text);
    RETURN NEW;
END
$$;

CREATE TRIGGER key_events_assign_seq
    BEFORE INSERT ON key_events
    FOR EACH ROW EXECUTE FUNCTION key_events_assign_seq();

-- Events up to pruned_through have been deleted by retention.
CREATE TABLE feed_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);

INSERT INTO feed_state (id, pruned_through) VALUES (1, 0);
