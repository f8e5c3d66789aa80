-- The embedded store's schema, version 2: the same tables and columns as PostgreSQL's
-- (migrations/postgres/ up to 0002), so that both stores run the same statements and every
-- feature lands on both. SQLite keeps UUIDs and times as text (times fixed-width RFC 3339 UTC,
-- so that text order is time order) and booleans as 0/1.

-- The result's defects as JSON, under PostgreSQL's name.
ALTER TABLE analyses RENAME COLUMN defects_json TO defects;

-- The dashboard's filters, each ending in the listing's order.
DROP INDEX analyses_station;
CREATE INDEX analyses_station ON analyses (facility, line, station, timestamp DESC, id DESC);
DROP INDEX analyses_sku;
CREATE INDEX analyses_sku ON analyses (product_sku, timestamp DESC, id DESC);
DROP INDEX analyses_verdict;
CREATE INDEX analyses_verdict ON analyses (defect_detected, timestamp DESC, id DESC);
CREATE INDEX analyses_device ON analyses (device_id, timestamp DESC, id DESC);

-- Devices, registered by their first frame (where they were then); filled from the frames
-- received so far.
CREATE TABLE devices (
    device_id  TEXT PRIMARY KEY,
    facility   TEXT NOT NULL,
    line       TEXT NOT NULL,
    station    TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
INSERT INTO devices (device_id, facility, line, station, first_seen)
SELECT f.device_id, a.facility, a.line, a.station, min(f.received_at)
FROM frames f JOIN analyses a ON a.id = f.analysis_id
GROUP BY f.device_id;

-- API keys, by SHA-256 only (keys still come from the configuration).
CREATE TABLE api_keys (
    sha256     BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL,     -- device | viewer | admin
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- Who changed what.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL          -- JSON
);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- Every model version ever fitted; the active ones so far are its first rows.
CREATE TABLE model_versions (
    sku        TEXT NOT NULL,
    version    TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (sku, version)
);
INSERT INTO model_versions (sku, version, body, created_at)
SELECT sku, version, body, created_at FROM models;

-- Golden samples, numbered in the order they were added (seq), as in PostgreSQL.
CREATE TABLE golden_samples_v2 (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    sku          TEXT NOT NULL,
    image_blake3 TEXT NOT NULL,
    image_key    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (sku, image_blake3)
);
INSERT INTO golden_samples_v2 (sku, image_blake3, image_key, created_at)
SELECT sku, image_blake3, image_key, created_at FROM golden_samples ORDER BY rowid;
DROP TABLE golden_samples;
ALTER TABLE golden_samples_v2 RENAME TO golden_samples;

-- The outbox holds events (`kind` = 'result': the analysis as JSON), which the publisher turns
-- into MQTT messages; rows queued before are MQTT messages (`kind` = 'mqtt', with their topic).
-- Rows are leased by the replica publishing them.
CREATE TABLE outbox_v2 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    topic        TEXT,
    payload      BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    leased_by    TEXT,
    leased_until TEXT
);
INSERT INTO outbox_v2 (id, kind, topic, payload, created_at)
SELECT id, 'mqtt', topic, payload, created_at FROM outbox ORDER BY id;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
