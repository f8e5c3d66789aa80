-- The embedded store's schema, version 7 (PostgreSQL's version 7 is the same): what the
-- dashboard reads.

-- Completed results counted per hour of capture and group, kept in the transaction that
-- completes (or enriches) each result, so that statistics never scan the results. The row with
-- `defect_type` '' counts the parts; a row per defect type counts the parts with at least one
-- defect of that type (and its defects). `shard` spreads the writes of one group over several
-- rows (PostgreSQL: concurrent completions do not wait on one row; the embedded store uses 0).
CREATE TABLE result_stats (
    hour            TEXT NOT NULL,       -- the capture hour, UTC
    facility        TEXT NOT NULL,
    line            TEXT NOT NULL,
    station         TEXT NOT NULL,
    product_sku     TEXT NOT NULL,
    device_id       TEXT NOT NULL,       -- '' for parts without a device (POST /api/v1/analyze)
    defect_detected INTEGER NOT NULL,
    defect_type     TEXT NOT NULL,
    shard           INTEGER NOT NULL,
    parts           INTEGER NOT NULL,    -- completed results
    judged          INTEGER NOT NULL,    -- of which with a verdict (provisional or final)
    ng              INTEGER NOT NULL,    -- of which NG
    defects         INTEGER NOT NULL,    -- defects found on them
    PRIMARY KEY (hour, facility, line, station, product_sku, device_id, defect_detected,
                 defect_type, shard)
);
INSERT INTO result_stats
SELECT substr(timestamp, 1, 13) || ':00:00.000000Z', facility, line, station, product_sku,
       coalesce(device_id, ''), defect_detected, '', 0, count(*),
       sum(CASE WHEN status IN ('provisional', 'final') THEN 1 ELSE 0 END),
       sum(CASE WHEN defect_detected THEN 1 ELSE 0 END), sum(json_array_length(defects))
FROM analyses WHERE status <> 'pending'
GROUP BY 1, 2, 3, 4, 5, 6, 7;
INSERT INTO result_stats
SELECT substr(a.timestamp, 1, 13) || ':00:00.000000Z', a.facility, a.line, a.station,
       a.product_sku, coalesce(a.device_id, ''), a.defect_detected, d.type, 0, count(*),
       sum(CASE WHEN a.status IN ('provisional', 'final') THEN 1 ELSE 0 END),
       sum(CASE WHEN a.defect_detected THEN 1 ELSE 0 END), sum(d.n)
FROM analyses a
JOIN (SELECT analysis_id, type, count(*) AS n FROM analysis_defects
      GROUP BY analysis_id, type) d ON d.analysis_id = a.id
WHERE a.status <> 'pending'
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

-- Reviews of results, every one kept; the latest is also on the result (its columns below),
-- for the listing's `feedback` filter and the capability counts.
CREATE TABLE feedback (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    analysis_id TEXT NOT NULL REFERENCES analyses (id),
    verdict     TEXT NOT NULL,           -- confirmed | false_ng | false_ok | inconclusive
    comment     TEXT,
    by_key      TEXT NOT NULL,           -- the reviewer's key name
    at          TEXT NOT NULL
);
CREATE INDEX feedback_analysis ON feedback (analysis_id, id);
ALTER TABLE analyses ADD COLUMN feedback_verdict TEXT;
ALTER TABLE analyses ADD COLUMN feedback_comment TEXT;
ALTER TABLE analyses ADD COLUMN feedback_by TEXT;
ALTER TABLE analyses ADD COLUMN feedback_at TEXT;
CREATE INDEX analyses_feedback ON analyses (feedback_verdict, timestamp DESC, id DESC);

-- The live feed: one row per result committed (completed or enriched), numbered in commit
-- order; every replica reads the rows past the last it saw. Kept a while for clients that
-- reconnect (`Last-Event-ID`).
CREATE TABLE result_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    analysis_id     TEXT NOT NULL,
    defect_detected INTEGER NOT NULL,
    at              TEXT NOT NULL
);
CREATE INDEX result_events_at ON result_events (at);
