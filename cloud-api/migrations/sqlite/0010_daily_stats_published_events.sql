-- The embedded store's schema, version 10 (PostgreSQL's version 10 is the same): the hourly
-- statistics rolled up by day, and the events the publisher sent for each part.

-- `result_stats` summed by UTC day, kept by the same statement pair in the same transaction:
-- a long range reads its whole UTC days here and only the hours around them by the hour (when
-- its buckets need no hour: one bucket, or days at offset 0, no shifts). Without a rowid: the
-- key is the table, so a range read touches nothing else.
CREATE TABLE result_stats_daily (
    day             TEXT NOT NULL,       -- the capture day, its midnight UTC
    facility        TEXT NOT NULL,
    line            TEXT NOT NULL,
    station         TEXT NOT NULL,
    product_sku     TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    defect_detected INTEGER NOT NULL,
    defect_type     TEXT NOT NULL,
    shard           INTEGER NOT NULL,
    parts           INTEGER NOT NULL,
    judged          INTEGER NOT NULL,
    ng              INTEGER NOT NULL,
    defects         INTEGER NOT NULL,
    PRIMARY KEY (day, facility, line, station, product_sku, device_id, defect_detected,
                 defect_type, shard)
) WITHOUT ROWID;
INSERT INTO result_stats_daily
SELECT substr(hour, 1, 10) || 'T00:00:00.000000Z', facility, line, station, product_sku,
       device_id, defect_detected, defect_type, shard, sum(parts), sum(judged), sum(ng),
       sum(defects)
FROM result_stats
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

-- Each result event the broker acknowledged, kept with its part (the outbox forgets published
-- events after `mqtt.replay_secs`): the part's page shows the messages it became (topic,
-- time, payload). The outbox names the part of each event it queues from now on.
ALTER TABLE outbox ADD COLUMN analysis_id TEXT;
CREATE TABLE published_events (
    event_id     INTEGER PRIMARY KEY,    -- the outbox row's id
    analysis_id  TEXT NOT NULL,
    payload      BLOB NOT NULL,          -- the event as queued (the result as JSON)
    published_at TEXT NOT NULL           -- when the broker had acknowledged every message
);
CREATE INDEX published_events_analysis ON published_events (analysis_id, event_id);
