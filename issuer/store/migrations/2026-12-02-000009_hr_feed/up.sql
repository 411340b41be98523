-- The HR feed (SCIM 2.0 /Users): the provisioning client's own identifier for a person,
-- and when the feed removed the person (DELETE): the record stays for the audit trail
-- and retention, the feed no longer shows it.
ALTER TABLE people ADD COLUMN external_id TEXT;
ALTER TABLE people ADD COLUMN removed_at BIGINT;
CREATE INDEX people_external_id ON people (external_id);
