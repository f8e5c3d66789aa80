-- The embedded store's schema, version 5 (PostgreSQL's version 5 is the same): remote
-- analyzers in a cascade behind the golden gate.

-- Every analyzer's verdict on a part (JSON array of wire `Verdict`s), and whether they
-- disagree on OK/NG.
ALTER TABLE analyses ADD COLUMN verdicts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE analyses ADD COLUMN disagreement INTEGER NOT NULL DEFAULT 0;

-- A job is for the local analyzer (`local`) or, for a provisional result, for the remote one
-- (`remote`); each has its own workers.
ALTER TABLE jobs ADD COLUMN stage TEXT NOT NULL DEFAULT 'local';
CREATE INDEX jobs_stage_fair ON jobs (stage, fair_at);

-- What the remote analyzer cost, per UTC day, analyzer, facility and SKU: the budget is
-- counted here, so it holds across replicas.
CREATE TABLE remote_costs (
    day           TEXT NOT NULL,        -- YYYY-MM-DD (UTC)
    analyzer      TEXT NOT NULL,
    facility      TEXT NOT NULL,
    product_sku   TEXT NOT NULL,
    parts         INTEGER NOT NULL,     -- parts sent to the remote analyzer
    failures      INTEGER NOT NULL,     -- of which its answer was an error
    disagreements INTEGER NOT NULL,     -- of which it disagreed with the local verdict
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd      REAL NOT NULL,
    PRIMARY KEY (day, analyzer, facility, product_sku)
);
