-- The audit trail of key management (ListKeyEvents): who changed which key,
-- how, when and from where. Written in the same transaction as the change;
-- kept for audit.retention_days, independently of the event log's pruning.
-- Never holds a secret or a digest. Times are Unix milliseconds.
-- kind: created, imported, rotated, revoked, scopes_changed, renamed,
-- rate_limit_changed, metadata_changed, networks_changed.
-- actor: token:<name>, jwt:<subject> or local; peer: the caller's address.
-- AUTOINCREMENT: a pruned seq is never handed out again.
CREATE TABLE key_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    peer TEXT NOT NULL
);

CREATE INDEX key_audit_by_account ON key_audit (account_id, seq);
CREATE INDEX key_audit_by_key ON key_audit (key_id, seq);
CREATE INDEX key_audit_by_time ON key_audit (at);
