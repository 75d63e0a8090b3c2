//! When a GPU stops being offered: the health rules, as one pure function over what was observed.
//!
//! A GPU the hub offers must be able to finish the work it is given. The rules mark a GPU unhealthy
//! on the failures after which NVIDIA's own guidance is to drain the GPU and reset or replace it:
//!
//! - **fallen off the bus** (NVML answers `GPU_IS_LOST`): the GPU no longer answers at all;
//! - **uncorrectable ECC errors** (double-bit, volatile count above zero): memory contents can no
//!   longer be trusted, and results computed on it may be silently wrong;
//! - **a serious XID** (see [`SERIOUS_XIDS`]): the driver reported a failure that takes the GPU out
//!   until it is reset;
//! - **sustained thermal throttling** (software or hardware thermal slowdown for at least
//!   [`THERMAL_THROTTLE_LIMIT`]): the GPU runs far below its rated speed, so a job placed on it would
//!   be slowed down for everyone in its gang. Short thermal spikes are normal and do not count.
//!
//! The first three never heal by themselves (volatile ECC counts and XIDs persist until the driver
//! is reloaded or the GPU reset; the agent remembers every XID it saw since it started), so a GPU
//! stays unhealthy until the agent restarts after the owner fixed it. Thermal throttling heals when it
//! ends.

use std::time::Duration;

use serde::Serialize;

/// The XIDs that make a GPU unhealthy, from NVIDIA's XID catalogue ("XID Errors", NVIDIA GPU
/// deployment and management documentation). Every one of them requires a GPU reset or node reboot
/// (or indicates hardware failure); the other XIDs are mostly application faults (13, 31, 43: a
/// kernel's own bad memory access) that say nothing about the GPU.
///
/// - 48: double-bit ECC error;
/// - 62: internal micro-controller halt;
/// - 63, 64: ECC page retirement or row remapping recorded / failed;
/// - 74: NVLink error;
/// - 79: the GPU has fallen off the bus;
/// - 92: high single-bit ECC error rate;
/// - 94, 95: contained / uncontained ECC error (95 needs a reset);
/// - 119, 120: GSP (GPU System Processor) RPC timeout / error.
pub const SERIOUS_XIDS: &[u32] = &[48, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120];

/// How long thermal throttling must last, without a break between samples, to make a GPU unhealthy.
pub const THERMAL_THROTTLE_LIMIT: Duration = Duration::from_secs(60);

/// What the health rules look at for one GPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthInputs<'a> {
    /// NVML reported the GPU lost (`GPU_IS_LOST`).
    pub lost: bool,
    /// Uncorrectable (double-bit) ECC errors since the driver loaded; `None` where ECC is off or
    /// not supported.
    pub ecc_uncorrected: Option<u64>,
    /// Every distinct XID code seen on the GPU since the agent started.
    pub xids_seen: &'a [u32],
    /// How long the GPU has been thermally throttled without interruption (zero when it is not).
    pub thermal_throttled_for: Duration,
}

/// Why a GPU is unhealthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "finding")]
pub enum Finding {
    /// NVML reports the GPU lost.
    FellOffTheBus,
    /// Uncorrectable ECC errors were counted.
    UncorrectableEcc {
        /// How many.
        count: u64,
    },
    /// A serious XID was reported.
    SeriousXid {
        /// Its code.
        xid: u32,
    },
    /// Thermal throttling lasted at least [`THERMAL_THROTTLE_LIMIT`].
    SustainedThermalThrottling {
        /// For how many seconds so far.
        seconds: u64,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FellOffTheBus => write!(f, "fell off the bus (NVML: GPU is lost)"),
            Self::UncorrectableEcc { count } => write!(f, "{count} uncorrectable ECC error(s)"),
            Self::SeriousXid { xid } => write!(f, "XID {xid}"),
            Self::SustainedThermalThrottling { seconds } => {
                write!(f, "thermally throttled for {seconds} s")
            }
        }
    }
}

/// Every reason the GPU is unhealthy, in the order of the rules above; empty when it is healthy.
pub fn findings(inputs: &HealthInputs<'_>) -> Vec<Finding> {
    let mut found = Vec::new();
    if inputs.lost {
        found.push(Finding::FellOffTheBus);
    }
    if let Some(count) = inputs.ecc_uncorrected.filter(|&count| count > 0) {
        found.push(Finding::UncorrectableEcc { count });
    }
    for &xid in inputs.xids_seen {
        if SERIOUS_XIDS.contains(&xid) {
            found.push(Finding::SeriousXid { xid });
        }
    }
    if inputs.thermal_throttled_for >= THERMAL_THROTTLE_LIMIT {
        found.push(Finding::SustainedThermalThrottling {
            seconds: inputs.thermal_throttled_for.as_secs(),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(inputs: &HealthInputs<'_>) -> bool {
        findings(inputs).is_empty()
    }

    #[test]
    fn a_quiet_gpu_is_healthy() {
        assert!(healthy(&HealthInputs::default()));
        assert!(healthy(&HealthInputs {
            ecc_uncorrected: Some(0),
            thermal_throttled_for: THERMAL_THROTTLE_LIMIT - Duration::from_millis(1),
            ..HealthInputs::default()
        }));
    }

    #[test]
    fn a_lost_gpu_is_unhealthy() {
        let inputs = HealthInputs {
            lost: true,
            ..HealthInputs::default()
        };
        assert_eq!(findings(&inputs), [Finding::FellOffTheBus]);
    }

    #[test]
    fn any_uncorrectable_ecc_error_is_unhealthy() {
        for count in [1, 2, u64::MAX] {
            let inputs = HealthInputs {
                ecc_uncorrected: Some(count),
                ..HealthInputs::default()
            };
            assert_eq!(findings(&inputs), [Finding::UncorrectableEcc { count }]);
        }
    }

    #[test]
    fn exactly_the_serious_xids_are_unhealthy() {
        for xid in 0..=200 {
            let inputs = HealthInputs {
                xids_seen: &[xid],
                ..HealthInputs::default()
            };
            let expected = if SERIOUS_XIDS.contains(&xid) {
                vec![Finding::SeriousXid { xid }]
            } else {
                vec![]
            };
            assert_eq!(findings(&inputs), expected, "XID {xid}");
        }
        // The documented examples, and application faults that are not the GPU's.
        for xid in [48, 63, 64, 74, 79, 92, 94, 95] {
            assert!(SERIOUS_XIDS.contains(&xid), "{xid}");
        }
        for xid in [13, 31, 43, 45] {
            assert!(!SERIOUS_XIDS.contains(&xid), "{xid}");
        }
    }

    #[test]
    fn thermal_throttling_counts_only_when_sustained() {
        let at = |seconds| HealthInputs {
            thermal_throttled_for: Duration::from_secs(seconds),
            ..HealthInputs::default()
        };
        assert!(healthy(&at(0)));
        assert!(healthy(&at(59)));
        assert_eq!(
            findings(&at(60)),
            [Finding::SustainedThermalThrottling { seconds: 60 }]
        );
        assert_eq!(
            findings(&at(3600)),
            [Finding::SustainedThermalThrottling { seconds: 3600 }]
        );
    }

    #[test]
    fn every_finding_is_listed_in_rule_order() {
        let inputs = HealthInputs {
            lost: true,
            ecc_uncorrected: Some(3),
            xids_seen: &[13, 79, 48],
            thermal_throttled_for: Duration::from_secs(90),
        };
        let found = findings(&inputs);
        assert_eq!(
            found,
            [
                Finding::FellOffTheBus,
                Finding::UncorrectableEcc { count: 3 },
                Finding::SeriousXid { xid: 79 },
                Finding::SeriousXid { xid: 48 },
                Finding::SustainedThermalThrottling { seconds: 90 },
            ]
        );
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "fell off the bus (NVML: GPU is lost)",
                "3 uncorrectable ECC error(s)",
                "XID 79",
                "XID 48",
                "thermally throttled for 90 s"
            ]
        );
    }
}
