-- The PostgreSQL store's schema, version 10 (the embedded store's version 10 is the same): the
-- hourly statistics rolled up by day, and the events the publisher sent for each part.

-- `result_stats` summed by UTC day, kept by the same statement pair in the same transaction:
-- a long range reads its whole UTC days here and only the hours around them by the hour (when
-- its buckets need no hour: one bucket, or days at offset 0, no shifts).
CREATE TABLE result_stats_daily (
    day             timestamptz NOT NULL,    -- the capture day, its midnight UTC
    facility        text NOT NULL,
    line            text NOT NULL,
    station         text NOT NULL,
    product_sku     text NOT NULL,
    device_id       text NOT NULL,
    defect_detected boolean NOT NULL,
    defect_type     text NOT NULL,
    shard           integer NOT NULL,
    parts           bigint NOT NULL,
    judged          bigint NOT NULL,
    ng              bigint NOT NULL,
    defects         bigint NOT NULL,
    PRIMARY KEY (day, facility, line, station, product_sku, device_id, defect_detected,
                 defect_type, shard)
);
-- The backfill sees every hourly row committed before it and none is added while it runs (a
-- replica of schema 9 still writing writes only the hour: stop those before this migration).
LOCK TABLE result_stats IN SHARE MODE;
INSERT INTO result_stats_daily
SELECT date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', facility, line, station,
       product_sku, device_id, defect_detected, defect_type, shard, sum(parts), sum(judged),
       sum(ng), sum(defects)
FROM result_stats
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

-- Each result event the broker acknowledged, kept with its part (the outbox forgets published
-- events after `mqtt.replay_secs`): the part's page shows the messages it became (topic,
-- time, payload). The outbox names the part of each event it queues from now on.
ALTER TABLE outbox ADD COLUMN analysis_id uuid;
CREATE TABLE published_events (
    event_id     bigint PRIMARY KEY,         -- the outbox row's id
    analysis_id  uuid NOT NULL,
    payload      bytea NOT NULL,             -- the event as queued (the result as JSON)
    published_at timestamptz NOT NULL        -- when the broker had acknowledged every message
);
CREATE INDEX published_events_analysis ON published_events (analysis_id, event_id);
