-- The key lifecycle (rotation, metadata, address allowlists).
-- metadata: a JSON object of string values ('{}' when none).
-- allowed_networks: normalised CIDRs, space-separated ('' when none: the
-- key works from anywhere).
-- rotated_from: the id of the key this one replaced.
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN allowed_networks TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN rotated_from TEXT;
