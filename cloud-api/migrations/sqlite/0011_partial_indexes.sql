-- Reviewed results are few and every filter on the review names one (`feedback = any` or a
-- verdict): a new part, not reviewed, writes no entry.
DROP INDEX analyses_feedback;
CREATE INDEX analyses_feedback ON analyses (feedback_verdict, timestamp DESC, id DESC)
    WHERE feedback_verdict IS NOT NULL;

-- (PostgreSQL's version 11 also gives the publisher an index of the unpublished messages: its
-- planner could walk the primary key over every published message kept. SQLite reads the
-- unpublished ones from `outbox_published`, in id order, and needs none.)
