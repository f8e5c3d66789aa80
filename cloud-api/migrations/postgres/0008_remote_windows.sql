-- The PostgreSQL store's schema, version 8 (the embedded store's version 8 is the same): a
-- remote deployment's token and request budget, shared by every replica.

-- Tokens and requests reserved per deployment (endpoint and model) and window (the window's
-- index since the Unix epoch, `deployment_window_secs` long). A call is reserved with one
-- upsert that only adds what still fits under the limits; its estimate is corrected with the
-- real usage after the answer. Rows of past windows are deleted when a window starts.
CREATE TABLE remote_windows (
    deployment text NOT NULL,
    slot       bigint NOT NULL,
    tokens     bigint NOT NULL,
    requests   bigint NOT NULL,
    PRIMARY KEY (deployment, slot)
);
