//! The agent service: Flowgate's client of the automagik Claude Code workflow API, and a
//! simulator of that API for tests and `flowgate serve`.
//!
//! The service has quirks a naive client trips over (see `docs/upstream-agent-api.md` §5): runs
//! started without `input_format` fail later, `progress.turns` stays 0 while running, the failure
//! reason is only in the run list, kill has no state guard, a 200 can mean a failed start, and a
//! retried start can create a second run. [`AgentClient`] absorbs them; the simulator reproduces
//! them so the absorption is tested against something that behaves like the real service.

pub mod client;
pub mod error;
pub mod models;
pub mod retry;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod timestamp;

pub use client::{AgentClient, AgentClientConfig, clamp_timeout, start_request};
pub use error::{AgentCall, AgentError};
pub use models::{
    AddMessageResponse, CleanupResponse, HealthResponse, KillOutcome, KillResponse,
    MessageQueueResponse, MessageType, QueueStats, RunList, RunListQuery, RunSortBy, RunSummary,
    SortOrder, StartRunRequest, StartRunResponse, StatusResponse, WorkflowInfo,
};
pub use retry::RetryPolicy;
