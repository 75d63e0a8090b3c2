-- The pricing epoch counts the GPUs placed in it (docs/scheduling.md, "Prices"): assignments by
-- the time they were placed.
CREATE INDEX assignments_by_creation ON assignments (created_at);
