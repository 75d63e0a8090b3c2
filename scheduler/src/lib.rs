//! Agora's placement engine: pure, deterministic functions over an in-memory view of the nodes.
//! It does no I/O, so every decision can be replayed in a test and explained to the user.
#![forbid(unsafe_code)]
