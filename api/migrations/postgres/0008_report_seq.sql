-- Agents number their status and checkpoint reports per assignment (`seq`, from 1, strictly
-- increasing). The hub keeps the highest number it applied for each assignment and refuses a report
-- at or below it, so a replayed or delayed report cannot undo a newer one. 0: none applied yet.
ALTER TABLE assignments ADD COLUMN report_seq BIGINT NOT NULL DEFAULT 0;
