-- The agent's frame buffer. Applied on every open; every statement is idempotent.

CREATE TABLE IF NOT EXISTS frames (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- per-device sequence number, never reused
    frame_id     TEXT    NOT NULL UNIQUE,           -- UUIDv7, the upload's idempotency key
    camera       TEXT    NOT NULL,
    device_id    TEXT    NOT NULL,
    facility     TEXT    NOT NULL,
    line         TEXT    NOT NULL,
    station      TEXT    NOT NULL,
    sku          TEXT    NOT NULL,
    part_id      TEXT,
    lot          TEXT,
    captured_at  TEXT    NOT NULL,                  -- RFC 3339, UTC
    image_blake3 TEXT    NOT NULL,
    jpeg         BLOB    NOT NULL,
    bytes        INTEGER NOT NULL,                  -- accounted size: JPEG + row overhead
    ng           INTEGER NOT NULL DEFAULT 0,        -- local verdict NG: synced first, evicted last
    edge         TEXT,                              -- the edge verdict (wire EdgeVerdict JSON), uploaded with the frame
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    inserted_ms  INTEGER,                           -- Unix ms of the insert (or requeue): the alert's grace
    unalerted    INTEGER NOT NULL DEFAULT 0         -- NG and no broker has acknowledged its alert: never evicted
);

CREATE INDEX IF NOT EXISTS frames_sync_order ON frames (ng DESC, seq ASC);

-- Frames the cloud rejected for good. Kept for the operator; never retried, never silently dropped.
CREATE TABLE IF NOT EXISTS dead_letters (
    frame_id    TEXT    PRIMARY KEY,
    seq         INTEGER NOT NULL,
    camera      TEXT    NOT NULL,
    meta_json   TEXT    NOT NULL,
    jpeg        BLOB    NOT NULL,
    status      INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    rejected_at TEXT    NOT NULL
);

-- Running totals, kept by triggers so that the size check is one row read.
CREATE TABLE IF NOT EXISTS usage (frames INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO usage SELECT count(*), coalesce(sum(bytes), 0) FROM frames WHERE NOT EXISTS (SELECT 1 FROM usage);

CREATE TRIGGER IF NOT EXISTS frames_usage_insert AFTER INSERT ON frames BEGIN
    UPDATE usage SET frames = frames + 1, bytes = bytes + NEW.bytes;
END;
CREATE TRIGGER IF NOT EXISTS frames_usage_delete AFTER DELETE ON frames BEGIN
    UPDATE usage SET frames = frames - 1, bytes = bytes - OLD.bytes;
END;

CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('evicted', 0);
-- Alerts dropped from the outbox (past [mqtt] outbox_max_alerts or outbox_max_age_secs).
INSERT OR IGNORE INTO counters (name, value) VALUES ('alerts_dropped', 0);

-- The NG alerts to publish on MQTT (the outbox): written in the transaction of their frame, so
-- an NG frame is never buffered without its alert; deleted when the broker acknowledged it
-- (PUBACK; the frame's `alerted` set in the same transaction), or dropped by the outbox's
-- bounds. A frame is held for its alert at most ALERT_GRACE after its insert: uploaded while
-- its alert is here, it does not say `alerted` (the cloud alerts that part too). `leased_until` (Unix ms)
-- marks one handed to the connection and not acknowledged yet (in flight: never dropped); a
-- start or the end of the connection frees them all.
CREATE TABLE IF NOT EXISTS alerts (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id     TEXT    NOT NULL UNIQUE,
    topic        TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    captured_at  TEXT    NOT NULL,                  -- RFC 3339: the capture-to-alert latency
    leased_until INTEGER
);
