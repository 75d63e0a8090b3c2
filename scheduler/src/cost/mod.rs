//! Communication cost models.
