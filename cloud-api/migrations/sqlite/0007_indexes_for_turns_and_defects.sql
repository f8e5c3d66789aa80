-- A device's latest job turns, read from the top of this index at each new job (counting
-- every job of a device made each upload slower the longer its backlog).
CREATE INDEX jobs_device_fair ON jobs (device_id, fair_at);
DROP INDEX jobs_device;
-- A result's defect types, found by its id (the agent's are replaced by the cloud's).
CREATE INDEX analysis_defects_analysis ON analysis_defects (analysis_id);
