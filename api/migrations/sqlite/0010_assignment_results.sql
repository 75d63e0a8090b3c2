-- What a builtin workload computed, as the worker's final report carried it: a JSON object
-- (`crds::agent::WorkloadResult`: backend, benchmark TFLOPS, output digest, chunk commitments),
-- shown on the job. NULL: no result reported (most workloads have none).
ALTER TABLE assignments ADD COLUMN result TEXT;
