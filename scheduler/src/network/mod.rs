//! The network model: latency coordinates fitted from RTT samples, per-node bandwidth, regions.
