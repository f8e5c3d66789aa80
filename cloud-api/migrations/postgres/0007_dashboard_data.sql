-- The PostgreSQL store's schema, version 7 (the embedded store's version 7 is the same): what
-- the dashboard reads.

-- Completed results counted per hour of capture and group, kept in the transaction that
-- completes (or enriches) each result, so that statistics never scan the results. The row with
-- `defect_type` '' counts the parts; a row per defect type counts the parts with at least one
-- defect of that type (and its defects). `shard` spreads the writes of one group over several
-- rows: concurrent completions of one station do not queue on one row lock.
CREATE TABLE result_stats (
    hour            timestamptz NOT NULL,    -- the capture hour
    facility        text NOT NULL,
    line            text NOT NULL,
    station         text NOT NULL,
    product_sku     text NOT NULL,
    device_id       text NOT NULL,           -- '' for parts without a device (POST /api/v1/analyze)
    defect_detected boolean NOT NULL,
    defect_type     text NOT NULL,
    shard           integer NOT NULL,
    parts           bigint NOT NULL,         -- completed results
    judged          bigint NOT NULL,         -- of which with a verdict (provisional or final)
    ng              bigint NOT NULL,         -- of which NG
    defects         bigint NOT NULL,         -- defects found on them
    PRIMARY KEY (hour, facility, line, station, product_sku, device_id, defect_detected,
                 defect_type, shard)
);
INSERT INTO result_stats
SELECT date_trunc('hour', timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', facility, line,
       station, product_sku, coalesce(device_id, ''), defect_detected, '', 0, count(*),
       sum(CASE WHEN status IN ('provisional', 'final') THEN 1 ELSE 0 END),
       sum(CASE WHEN defect_detected THEN 1 ELSE 0 END), sum(jsonb_array_length(defects))
FROM analyses WHERE status <> 'pending'
GROUP BY 1, 2, 3, 4, 5, 6, 7;
INSERT INTO result_stats
SELECT date_trunc('hour', a.timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', a.facility,
       a.line, a.station, a.product_sku, coalesce(a.device_id, ''), a.defect_detected, d.type, 0,
       count(*), sum(CASE WHEN a.status IN ('provisional', 'final') THEN 1 ELSE 0 END),
       sum(CASE WHEN a.defect_detected THEN 1 ELSE 0 END), sum(d.n)
FROM analyses a
JOIN (SELECT analysis_id, type, count(*) AS n FROM analysis_defects
      GROUP BY analysis_id, type) d ON d.analysis_id = a.id
WHERE a.status <> 'pending'
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

-- Reviews of results, every one kept; the latest is also on the result (its columns below),
-- for the listing's `feedback` filter and the capability counts.
CREATE TABLE feedback (
    id          bigserial PRIMARY KEY,
    analysis_id uuid NOT NULL REFERENCES analyses (id),
    verdict     text NOT NULL,           -- confirmed | false_ng | false_ok | inconclusive
    comment     text,
    by_key      text NOT NULL,           -- the reviewer's key name
    at          timestamptz NOT NULL
);
CREATE INDEX feedback_analysis ON feedback (analysis_id, id);
ALTER TABLE analyses ADD COLUMN feedback_verdict text;
ALTER TABLE analyses ADD COLUMN feedback_comment text;
ALTER TABLE analyses ADD COLUMN feedback_by text;
ALTER TABLE analyses ADD COLUMN feedback_at timestamptz;
CREATE INDEX analyses_feedback ON analyses (feedback_verdict, timestamp DESC, id DESC);

-- The live feed: one row per result committed (completed or enriched), numbered; every
-- replica reads the rows past the last it saw (ids are taken before commit, so a reader looks
-- back a little for late commits: see `cloud-api/src/live.rs`). Kept a while for clients that
-- reconnect (`Last-Event-ID`).
CREATE TABLE result_events (
    id              bigserial PRIMARY KEY,
    analysis_id     uuid NOT NULL,
    defect_detected boolean NOT NULL,
    at              timestamptz NOT NULL
);
CREATE INDEX result_events_at ON result_events (at);
