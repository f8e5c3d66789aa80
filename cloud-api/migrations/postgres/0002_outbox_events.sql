-- The PostgreSQL store's schema, version 2. The outbox holds events (`kind` = 'result': the
-- analysis as JSON), which the publisher turns into MQTT messages; rows queued before are MQTT
-- messages (`kind` = 'mqtt', with their topic).
ALTER TABLE outbox ADD COLUMN kind text NOT NULL DEFAULT 'mqtt';
ALTER TABLE outbox ALTER COLUMN kind DROP DEFAULT;
ALTER TABLE outbox ALTER COLUMN topic DROP NOT NULL;
