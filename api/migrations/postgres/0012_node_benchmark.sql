-- Each node's latest matmul benchmark score, as its agent reported it in a heartbeat (rare: at
-- start and once a day). TFLOPS × 1000 as an integer; the time is the agent's, Unix ms (BIGINT,
-- as every time here); the finding says why the score is far below the claimed model's peak.
-- NULL: never reported.
ALTER TABLE nodes ADD COLUMN benchmark_tflops_milli BIGINT;
ALTER TABLE nodes ADD COLUMN benchmark_at BIGINT;
ALTER TABLE nodes ADD COLUMN benchmark_finding TEXT;
