DROP INDEX certificates_revoked_at;
DROP INDEX certificates_created_at;
