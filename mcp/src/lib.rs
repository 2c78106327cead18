//! Flowgate over MCP: one tool set, two transports.
//!
//! - [`stdio`]: `flowgate mcp`, a stdio server a desktop assistant starts, calling a Flowgate
//!   HTTP API (URL and key from flags or the environment) through the shared
//!   [`FlowgateClient`](flowgate_shared::api::client::FlowgateClient).
//! - [`http`]: the same server as a stateless Streamable HTTP service, which the api function
//!   mounts at `/mcp` behind its API key check.
//!
//! Both build [`FlowgateMcp`] (the tools, their schemas and annotations, progress, error
//! wording) over a [`Connector`]: the only thing that differs between the transports is how a
//! tool reaches the API ([`api`] says why the tools always go through the API). So the tool
//! list, the schemas and the behaviour are the same by construction, and a test compares them
//! over both transports with a real MCP client.

pub mod api;
pub mod error;
pub mod http;
pub mod server;
pub mod stdio;
pub mod types;

pub use api::{ClientConnector, Connector, FlowgateApi};
pub use error::ToolError;
pub use server::{DECIDE_APPROVAL, FlowgateMcp, Settings};
