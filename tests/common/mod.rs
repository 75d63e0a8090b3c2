//! Helpers shared by the integration tests of the root crate.

pub mod helm;
