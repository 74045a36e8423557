-- Usage quotas (issue 18).
-- quota_requests, quota_refill: the key's quota ('never', 'daily' or
-- 'monthly'), both NULL when it has none.
-- quota_period, quota_used: how much of it is used, in which refill period
-- (the UTC day or month counted from 1970-01; 0 for 'never'), as of the last
-- flush of a replica's counts (with limits in Redis, Redis holds the live
-- count and these are its last known value).
ALTER TABLE api_keys ADD COLUMN quota_requests BIGINT;
ALTER TABLE api_keys ADD COLUMN quota_refill TEXT;
ALTER TABLE api_keys ADD COLUMN quota_period BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN quota_used BIGINT NOT NULL DEFAULT 0;
