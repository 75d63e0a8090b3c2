-- Base prices per GPU class (EIP-1559-style), as the last pricing epoch left them. Money is integer
-- micro-units per GPU-hour; utilization and change are basis points.
CREATE TABLE base_prices (
    gpu_class        TEXT PRIMARY KEY,
    base_micros      BIGINT NOT NULL,
    utilization_bps  BIGINT NOT NULL,
    change_bps       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
