-- The PostgreSQL store's schema, version 3 (the embedded store's version 3 is the same).

-- API keys, by SHA-256 only, named by a visible prefix (`wk_<prefix>_…`). A device key is
-- bound to its facility (and optionally one device). The table of version 1 was never
-- written to: it is replaced.
DROP TABLE api_keys;
CREATE TABLE api_keys (
    prefix       text PRIMARY KEY,
    sha256       bytea NOT NULL UNIQUE,
    name         text NOT NULL,
    scope        text NOT NULL,         -- device | viewer | admin
    facility     text,
    device_id    text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Fair queueing: a job's turn (`fair_at`) comes later the more work its device already has
-- waiting, so one device cannot hold the workers while another's parts wait.
ALTER TABLE jobs ADD COLUMN device_id text;
ALTER TABLE jobs ADD COLUMN fair_at timestamptz;
UPDATE jobs SET fair_at = run_after,
    device_id = (SELECT a.device_id FROM analyses a WHERE a.id = jobs.analysis_id);
ALTER TABLE jobs ALTER COLUMN fair_at SET NOT NULL;
CREATE INDEX jobs_fair ON jobs (fair_at);
CREATE INDEX jobs_device ON jobs (device_id);

-- Events published to the embedded broker are kept a while after their acknowledgement, to be
-- published again after a restart (the embedded broker keeps nothing across one).
ALTER TABLE outbox ADD COLUMN published_at timestamptz;
CREATE INDEX outbox_published ON outbox (published_at);
