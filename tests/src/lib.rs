//! End-to-end and contract tests for Flowgate, as a workspace member so they compile with the
//! rest of the workspace.
//!
//! [`contract`] holds the port contract suite (the cases, written once); `tests/contract.rs`
//! runs it against every backend. [`runtime`] holds helpers of the poller and runtime tests
//! (moto-backed ports, SQS records shaped as Lambda delivers them).

pub mod contract;
pub mod runtime;
