-- Every job is written, leased and deleted once per part; each index on `jobs` is written with
-- it. Two served no query: the claim reads `jobs_stage_fair` (it always names the stage), and
-- the queue's figures (`count(*)`, `min(run_after)`) read every row anyway.
DROP INDEX jobs_fair;
DROP INDEX jobs_runnable;
