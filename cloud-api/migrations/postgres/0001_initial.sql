-- The PostgreSQL store's schema, version 1. Applied once by `wiko-cloud migrate` (or on start);
-- an applied migration is never edited: changes go into a new numbered file.

-- One row per part. The prototype's columns first (id, defect_id, timestamp, facility,
-- product_sku, defect_detected), then the analysis.
CREATE TABLE analyses (
    id               uuid PRIMARY KEY,
    defect_id        text NOT NULL UNIQUE,          -- DEF-<16 hex>
    timestamp        timestamptz NOT NULL,          -- capture time
    facility         text NOT NULL,
    line             text NOT NULL,
    station          text NOT NULL,
    product_sku      text NOT NULL,
    part_id          text,
    lot              text,
    device_id        text,
    frame_id         uuid UNIQUE,
    seq              bigint,                        -- the agent's per-device sequence number
    status           text NOT NULL,                 -- pending | not_calibrated | provisional | final | failed
    defect_detected  boolean NOT NULL,
    defects          jsonb NOT NULL,
    score            real,
    score_threshold  real,
    confidence       real,
    recommendation   text NOT NULL,
    analyzer         text NOT NULL,
    analyzer_version text NOT NULL,
    model_version    text,
    latency_ms       double precision,
    image_key        text NOT NULL,
    image_blake3     text NOT NULL,
    image_width      integer NOT NULL,
    image_height     integer NOT NULL,
    created_at       timestamptz NOT NULL,
    analyzed_at      timestamptz
);
-- The dashboard's filters, each ending in the listing's order.
CREATE INDEX analyses_time ON analyses (timestamp DESC, id DESC);
CREATE INDEX analyses_station ON analyses (facility, line, station, timestamp DESC, id DESC);
CREATE INDEX analyses_sku ON analyses (product_sku, timestamp DESC, id DESC);
CREATE INDEX analyses_verdict ON analyses (defect_detected, timestamp DESC, id DESC);
CREATE INDEX analyses_device ON analyses (device_id, timestamp DESC, id DESC);

-- One row per defect type found, for the defect-type filter.
CREATE TABLE analysis_defects (
    analysis_id uuid NOT NULL REFERENCES analyses (id),
    type        text NOT NULL
);
CREATE INDEX analysis_defects_type ON analysis_defects (type, analysis_id);

-- Agent frames: the idempotency record of ingest.
CREATE TABLE frames (
    frame_id    uuid PRIMARY KEY,
    analysis_id uuid NOT NULL REFERENCES analyses (id),
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    meta_json   text NOT NULL,   -- canonical FrameMeta; equal text means the same upload
    received_at timestamptz NOT NULL
);
CREATE INDEX frames_device ON frames (device_id, seq);

-- Devices, registered by their first frame (where they were then). When each was last heard
-- from is the newest of its frames (frames_device), so ingest never updates a shared row.
CREATE TABLE devices (
    device_id  text PRIMARY KEY,
    facility   text NOT NULL,
    line       text NOT NULL,
    station    text NOT NULL,
    first_seen timestamptz NOT NULL
);

-- API keys, by SHA-256 only (the key model's later issue fills this; config keys still work).
CREATE TABLE api_keys (
    sha256     bytea PRIMARY KEY,
    name       text NOT NULL,
    scope      text NOT NULL,     -- device | viewer | admin
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

-- Who changed what: golden uploads and model versions.
CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    detail jsonb NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- The analysis queue, shared by every replica. A row lives until its analysis is complete.
-- Workers lease rows with FOR UPDATE SKIP LOCKED; an expired lease makes the job runnable.
CREATE TABLE jobs (
    analysis_id  uuid PRIMARY KEY REFERENCES analyses (id),
    run_after    timestamptz NOT NULL,
    leased_until timestamptz,
    attempts     integer NOT NULL,
    last_error   text
);
CREATE INDEX jobs_runnable ON jobs (run_after);

-- MQTT messages not yet acknowledged by the broker. A replica leases rows before publishing,
-- so two replicas do not publish the same message.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    leased_by    uuid,
    leased_until timestamptz
);

-- The active model of each SKU (serialised wiko-inspect model), and every version ever fitted.
CREATE TABLE models (
    sku        text PRIMARY KEY,
    version    text NOT NULL,
    body       bytea NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE model_versions (
    sku        text NOT NULL,
    version    text NOT NULL,
    body       bytea NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (sku, version)
);

-- Golden samples: the good parts each SKU's model is fitted from (images in the object store).
CREATE TABLE golden_samples (
    sku          text NOT NULL,
    image_blake3 text NOT NULL,
    image_key    text NOT NULL,
    created_at   timestamptz NOT NULL,
    seq          bigserial,
    PRIMARY KEY (sku, image_blake3)
);
