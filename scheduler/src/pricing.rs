//! Dynamic base prices per GPU class.
