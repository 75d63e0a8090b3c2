//! Agora's end-to-end tests: they start real `agora` processes (hub and agents) that talk over real
//! HTTP on loopback, and drive them as users do. The tests live in `tests/`; this library holds the
//! helpers that start, wait for and stop the processes.
#![forbid(unsafe_code)]
