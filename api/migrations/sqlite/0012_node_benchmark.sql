-- Each node's latest matmul benchmark score, as its agent reported it in a heartbeat (rare: at
-- start and once a day). TFLOPS × 1000 as an integer; the time is the agent's, Unix ms; the
-- finding says why the score is far below the claimed model's peak. NULL: never reported.
ALTER TABLE nodes ADD COLUMN benchmark_tflops_milli INTEGER;
ALTER TABLE nodes ADD COLUMN benchmark_at INTEGER;
ALTER TABLE nodes ADD COLUMN benchmark_finding TEXT;
