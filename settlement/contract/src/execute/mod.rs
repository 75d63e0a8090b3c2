//! The execute messages other than the admin's, by area.

pub mod batch;
pub mod escrow;
pub mod stake;
