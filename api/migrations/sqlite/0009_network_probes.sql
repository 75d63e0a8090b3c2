-- What agents measure of the network, kept so that every replica, and a leader that restarts, can
-- rebuild the scheduler's network model. Written in batches by each replica's heartbeat flush,
-- never per heartbeat. RTTs are integer microseconds, bandwidths integer kbit/s, times Unix ms.
--
-- No foreign keys: these are observations written in multi-row batches, and one row naming a node
-- that is gone must not refuse the batch; the model ignores rows of unknown nodes.

-- Per node: where its agent answers peer probes (set at registration; NULL: not probed), and its
-- latest measurements against the hub.
CREATE TABLE node_network (
    node_name      TEXT PRIMARY KEY,
    probe_address  TEXT,
    hub_rtt_us     INTEGER,
    uplink_kbps    INTEGER,
    downlink_kbps  INTEGER,
    measured_at    INTEGER
);
CREATE INDEX node_network_by_time ON node_network (measured_at);

-- The latest RTT `from_node` measured to `to_node`, one row per directed pair. Rows older than the
-- retention are deleted by the flush.
CREATE TABLE probe_rtts (
    from_node    TEXT NOT NULL,
    to_node      TEXT NOT NULL,
    rtt_us       INTEGER NOT NULL,
    measured_at  INTEGER NOT NULL,
    PRIMARY KEY (from_node, to_node)
);
CREATE INDEX probe_rtts_by_time ON probe_rtts (measured_at);
