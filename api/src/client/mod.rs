//! The user-facing REST client behind `agora job …` and `agora node …`.
//!
//! It speaks to a hub only through the public `/v1` API (never the store), so it works the same
//! against `agora dev` on a laptop and a production hub behind a proxy, and it can be lifted into
//! a binary of its own. Layers, each usable on its own:
//!
//! - [`HubClient`] — typed calls, one per endpoint, returning the wire types of [`crds::rest`];
//! - [`render`] — pure text views (kubectl-style tables and a describe view);
//! - [`commands`] — the clap subcommands and the code that runs them.

pub mod commands;
mod error;
mod http;
pub mod render;
mod table;

pub use commands::{HubArgs, JobCommand, NodeCommand, Output, run_job, run_node};
pub use error::{API_KEY_HINT, ApiError, ClientError, Result};
pub use http::{CONTENT_TYPE_JSON, CONTENT_TYPE_YAML, HubClient, HubTrust};
pub use render::{job_detail, jobs_table, nodes_table};
pub use table::Table;
