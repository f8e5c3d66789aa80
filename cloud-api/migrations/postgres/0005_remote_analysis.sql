-- The PostgreSQL store's schema, version 5 (the embedded store's version 5 is the same):
-- remote analyzers in a cascade behind the golden gate.

-- Every analyzer's verdict on a part (JSON array of wire `Verdict`s), and whether they
-- disagree on OK/NG.
ALTER TABLE analyses ADD COLUMN verdicts jsonb NOT NULL DEFAULT '[]';
ALTER TABLE analyses ADD COLUMN disagreement boolean NOT NULL DEFAULT false;

-- A job is for the local analyzer (`local`) or, for a provisional result, for the remote one
-- (`remote`); each has its own workers.
ALTER TABLE jobs ADD COLUMN stage text NOT NULL DEFAULT 'local';
CREATE INDEX jobs_stage_fair ON jobs (stage, fair_at);

-- What the remote analyzer cost, per UTC day, analyzer, facility and SKU: the budget is
-- counted here, so it holds across replicas.
CREATE TABLE remote_costs (
    day           text NOT NULL,        -- YYYY-MM-DD (UTC)
    analyzer      text NOT NULL,
    facility      text NOT NULL,
    product_sku   text NOT NULL,
    parts         bigint NOT NULL,      -- parts sent to the remote analyzer
    failures      bigint NOT NULL,      -- of which its answer was an error
    disagreements bigint NOT NULL,      -- of which it disagreed with the local verdict
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_usd      double precision NOT NULL,
    PRIMARY KEY (day, analyzer, facility, product_sku)
);
