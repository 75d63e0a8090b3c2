//! The network a gang is placed on: delay and bandwidth for every ordered pair of devices.

use std::{fmt, sync::Arc};

/// One directed link between two devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way delay in milliseconds (the paper's α, in ms rather than seconds).
    pub delay_ms: f64,
    /// Bandwidth in gigabits per second (the paper's β).
    pub bandwidth_gbps: f64,
}

impl Link {
    /// Seconds to move `size_gb` gigabytes over this link: `delay_ms / 1000 + size_gb · 8 / bandwidth`,
    /// the α + c/β latency–bandwidth term every cost in the paper is built from.
    pub fn transfer_s(&self, size_gb: f64) -> f64 {
        self.delay_ms / 1000.0 + size_gb * 8.0 / self.bandwidth_gbps
    }

    fn is_valid(&self) -> bool {
        self.delay_ms.is_finite()
            && self.delay_ms >= 0.0
            && self.bandwidth_gbps.is_finite()
            && self.bandwidth_gbps > 0.0
    }
}

/// A link source that computes links on demand, so the scheduler can feed the cost model straight
/// from its network model (latency coordinates and per-node bandwidth) without materializing n²
/// matrices for every candidate set.
type LinkFn = dyn Fn(usize, usize) -> Link + Send + Sync;

#[derive(Clone)]
enum Links {
    Dense {
        delay_ms: Vec<f64>,
        bandwidth_gbps: Vec<f64>,
    },
    Computed(Arc<LinkFn>),
}

/// `n` devices and the directed link between every ordered pair `(i, j)`, `i ≠ j`; the paper's
/// communication graph G with its delay matrix A and bandwidth matrix B. Links need not be
/// symmetric: the cost model always reads the link in the direction data flows.
#[derive(Clone)]
pub struct Topology {
    n: usize,
    links: Links,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.links {
            Links::Dense { .. } => "dense",
            Links::Computed(_) => "computed",
        };
        f.debug_struct("Topology")
            .field("n", &self.n)
            .field("links", &kind)
            .finish()
    }
}

impl Topology {
    /// Builds a topology from dense `n × n` matrices (row = sender, column = receiver). The diagonal
    /// is ignored: a device never sends to itself in this model. Every off-diagonal delay must be
    /// finite and non-negative and every off-diagonal bandwidth finite and positive, so that every
    /// cost the model derives is a finite number of seconds.
    pub fn from_matrices(
        delay_ms: &[Vec<f64>],
        bandwidth_gbps: &[Vec<f64>],
    ) -> Result<Self, TopologyError> {
        let n = delay_ms.len();
        if bandwidth_gbps.len() != n {
            return Err(TopologyError::Shape {
                rows: bandwidth_gbps.len(),
                expected: n,
            });
        }
        let mut delay = Vec::with_capacity(n * n);
        let mut bandwidth = Vec::with_capacity(n * n);
        for (d_row, b_row) in delay_ms.iter().zip(bandwidth_gbps) {
            for row in [d_row, b_row] {
                if row.len() != n {
                    return Err(TopologyError::Shape {
                        rows: row.len(),
                        expected: n,
                    });
                }
            }
            delay.extend_from_slice(d_row);
            bandwidth.extend_from_slice(b_row);
        }
        for i in 0..n {
            for j in (0..n).filter(|&j| j != i) {
                let link = Link {
                    delay_ms: delay[i * n + j],
                    bandwidth_gbps: bandwidth[i * n + j],
                };
                if !link.is_valid() {
                    return Err(TopologyError::InvalidLink {
                        from: i,
                        to: j,
                        link,
                    });
                }
            }
        }
        Ok(Self {
            n,
            links: Links::Dense {
                delay_ms: delay,
                bandwidth_gbps: bandwidth,
            },
        })
    }

    /// A topology whose links are computed on demand by `link(from, to)`. Nothing is checked up
    /// front; [`Topology::validate`] checks every pair when the caller wants that.
    pub fn from_fn(n: usize, link: impl Fn(usize, usize) -> Link + Send + Sync + 'static) -> Self {
        Self {
            n,
            links: Links::Computed(Arc::new(link)),
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The link from device `from` to device `to`.
    ///
    /// # Panics
    /// If either index is `≥ len()` (like slice indexing).
    pub fn link(&self, from: usize, to: usize) -> Link {
        assert!(
            from < self.n && to < self.n,
            "device index out of range: ({from}, {to}) with {} devices",
            self.n
        );
        match &self.links {
            Links::Dense {
                delay_ms,
                bandwidth_gbps,
            } => Link {
                delay_ms: delay_ms[from * self.n + to],
                bandwidth_gbps: bandwidth_gbps[from * self.n + to],
            },
            Links::Computed(f) => f(from, to),
        }
    }

    /// Delay from `from` to `to`, in milliseconds.
    pub fn delay_ms(&self, from: usize, to: usize) -> f64 {
        self.link(from, to).delay_ms
    }

    /// Bandwidth from `from` to `to`, in gigabits per second.
    pub fn bandwidth_gbps(&self, from: usize, to: usize) -> f64 {
        self.link(from, to).bandwidth_gbps
    }

    /// Checks every off-diagonal link (finite non-negative delay, finite positive bandwidth).
    pub fn validate(&self) -> Result<(), TopologyError> {
        for from in 0..self.n {
            for to in (0..self.n).filter(|&to| to != from) {
                let link = self.link(from, to);
                if !link.is_valid() {
                    return Err(TopologyError::InvalidLink { from, to, link });
                }
            }
        }
        Ok(())
    }
}

/// Why a topology was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum TopologyError {
    /// A matrix (or one of its rows) does not have the expected size.
    Shape { rows: usize, expected: usize },
    /// A link with a negative or non-finite delay, or a bandwidth that is not a positive number.
    InvalidLink { from: usize, to: usize, link: Link },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape { rows, expected } => {
                write!(
                    f,
                    "matrix has {rows} entries where {expected} were expected"
                )
            }
            Self::InvalidLink { from, to, link } => write!(
                f,
                "link {from}→{to} has delay {} ms and bandwidth {} Gbps; delays must be ≥ 0 and \
                 bandwidths > 0, both finite",
                link.delay_ms, link.bandwidth_gbps
            ),
        }
    }
}

impl std::error::Error for TopologyError {}
