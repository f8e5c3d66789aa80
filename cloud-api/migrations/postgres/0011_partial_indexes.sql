-- Reviewed results are few and every filter on the review names one (`feedback = any` or a
-- verdict): a new part, not reviewed, writes no entry.
DROP INDEX analyses_feedback;
CREATE INDEX analyses_feedback ON analyses (feedback_verdict, timestamp DESC, id DESC)
    WHERE feedback_verdict IS NOT NULL;

-- The publisher takes the oldest unpublished messages; published ones stay for replay. From
-- its estimates PostgreSQL could walk the primary key over every published message kept (2 ms
-- per poll at 20,000 kept, growing with them); this index holds only the unpublished.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
