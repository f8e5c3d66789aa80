-- The PostgreSQL store's schema, version 12 (the embedded store's version 12 is the same): a
-- result's defect types as the listing reads them, and the published events by age.

-- One row per defect type on a result (the listing's `defect_type` filter), with the result's
-- capture time: the newest parts of one type are the first rows of `analysis_defects_type_time`,
-- so a page of them reads its rows there and looks up only those parts. The rows before (one
-- per defect, no time) made the page walk every result newest first and look each one up here
-- until it had found enough (22.6 ms p50 at 1,000,000 results with a type on one part in 16,
-- longer the rarer the type). `found` counts the defects of that type (the statistics' scan).
-- Replicas of an earlier version write the rows before: stop them before this is applied.
CREATE TABLE analysis_defects_new (
    analysis_id uuid NOT NULL CONSTRAINT analysis_defects_analysis_id_fkey REFERENCES analyses (id),
    type        text NOT NULL,
    captured_at timestamptz NOT NULL,    -- the result's `timestamp`
    found       integer NOT NULL,        -- defects of this type on the result
    CONSTRAINT analysis_defects_key PRIMARY KEY (analysis_id, type)
);
INSERT INTO analysis_defects_new (analysis_id, type, captured_at, found)
SELECT d.analysis_id, d.type, a.timestamp, count(*)
FROM analysis_defects d JOIN analyses a ON a.id = d.analysis_id
GROUP BY d.analysis_id, d.type, a.timestamp;
DROP TABLE analysis_defects;
ALTER TABLE analysis_defects_new RENAME TO analysis_defects;
CREATE INDEX analysis_defects_type_time ON analysis_defects (type, captured_at DESC, analysis_id DESC);

-- The retention sweep deletes the oldest published events (`mqtt.published_events_days`).
CREATE INDEX published_events_at ON published_events (published_at);
