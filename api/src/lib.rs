//! The Agora hub: the REST API for users and agents (axum), the store (sqlx over SQLite or
//! PostgreSQL), the job lifecycle, and the scheduling loop that hands pending jobs to the
//! `scheduler` crate and writes its placements.
//!
//! [`RunningHub::start`] runs a hub; [`routes::router`] builds the HTTP surface over an
//! [`AppState`] for tests that drive it without a socket.
#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod bootstrap;
pub mod client;
pub mod error;
mod extract;
pub mod heartbeats;
pub mod honesty;
pub mod ids;
pub mod leader;
pub mod lifecycle;
pub mod liveness;
pub mod market;
pub mod metrics;
pub mod network;
pub mod openapi;
pub mod ratelimit;
pub mod relayer;
pub mod routes;
pub mod scheduling;
pub mod server;
pub mod service;
pub mod settlement;
pub mod settling;
pub mod slashing;
pub mod stakes;
pub mod state;
pub mod statement;
pub mod store;
pub mod submission;
pub mod verifying;
pub mod views;

pub use server::{HubConfig, RunningHub};
pub use state::{AppState, HubSettings};
