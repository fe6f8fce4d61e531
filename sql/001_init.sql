CREATE SCHEMA IF NOT EXISTS twofactor; CREATE TABLE twofactor.schema_version(version int NOT NULL); INSERT INTO twofactor.schema_version VALUES (1);
