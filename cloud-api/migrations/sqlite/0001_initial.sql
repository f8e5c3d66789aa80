-- The embedded store's schema, version 1 (as released before migrations were numbered: every
-- statement is idempotent, so a file of that time is taken as version 1). Never edited:
-- changes go into a new numbered file.

-- One row per part. The prototype's columns first (id, defect_id, timestamp, facility,
-- product_sku, defect_detected), then the analysis.
CREATE TABLE IF NOT EXISTS analyses (
    id               TEXT PRIMARY KEY,          -- UUID
    defect_id        TEXT NOT NULL UNIQUE,      -- DEF-<16 hex>
    timestamp        TEXT NOT NULL,             -- capture time, RFC 3339 UTC, fixed width
    facility         TEXT NOT NULL,
    line             TEXT NOT NULL,
    station          TEXT NOT NULL,
    product_sku      TEXT NOT NULL,
    part_id          TEXT,
    lot              TEXT,
    device_id        TEXT,
    frame_id         TEXT UNIQUE,
    seq              INTEGER,                   -- the agent's per-device sequence number
    status           TEXT NOT NULL,             -- pending | not_calibrated | provisional | final | failed
    defect_detected  INTEGER NOT NULL,
    defects_json     TEXT NOT NULL,
    score            REAL,
    score_threshold  REAL,
    confidence       REAL,
    recommendation   TEXT NOT NULL,
    analyzer         TEXT NOT NULL,
    analyzer_version TEXT NOT NULL,
    model_version    TEXT,
    latency_ms       REAL,
    image_key        TEXT NOT NULL,
    image_blake3     TEXT NOT NULL,
    image_width      INTEGER NOT NULL,
    image_height     INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    analyzed_at      TEXT
);
CREATE INDEX IF NOT EXISTS analyses_time ON analyses (timestamp DESC, id DESC);
CREATE INDEX IF NOT EXISTS analyses_station ON analyses (facility, line, station, timestamp DESC);
CREATE INDEX IF NOT EXISTS analyses_sku ON analyses (product_sku, timestamp DESC);
CREATE INDEX IF NOT EXISTS analyses_verdict ON analyses (defect_detected, timestamp DESC);

-- One row per defect type found, for the defect-type filter.
CREATE TABLE IF NOT EXISTS analysis_defects (
    analysis_id TEXT NOT NULL REFERENCES analyses (id),
    type        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS analysis_defects_type ON analysis_defects (type, analysis_id);

-- Agent frames: the idempotency record of ingest.
CREATE TABLE IF NOT EXISTS frames (
    frame_id    TEXT PRIMARY KEY,
    analysis_id TEXT NOT NULL REFERENCES analyses (id),
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    meta_json   TEXT NOT NULL,   -- canonical FrameMeta; equal JSON means the same upload
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_device ON frames (device_id, seq);

-- The analysis queue. A row lives until its analysis is complete.
CREATE TABLE IF NOT EXISTS jobs (
    analysis_id  TEXT PRIMARY KEY REFERENCES analyses (id),
    run_after    TEXT NOT NULL,
    leased_until TEXT,
    attempts     INTEGER NOT NULL,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (run_after);

-- MQTT messages not yet acknowledged by the broker (survive restarts).
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- Per-SKU models (serialised wiko-inspect models).
CREATE TABLE IF NOT EXISTS models (
    sku        TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- Golden samples: the good parts each SKU's model is fitted from (images in the blob store).
CREATE TABLE IF NOT EXISTS golden_samples (
    sku          TEXT NOT NULL,
    image_blake3 TEXT NOT NULL,
    image_key    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (sku, image_blake3)
);
