DROP INDEX people_external_id;
ALTER TABLE people DROP COLUMN removed_at;
ALTER TABLE people DROP COLUMN external_id;
