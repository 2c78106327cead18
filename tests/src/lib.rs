//! End-to-end and contract tests for Flowgate, as a workspace member so they compile with the
//! rest of the workspace.
//!
//! [`contract`] holds the port contract suite (the cases, written once); `tests/contract.rs`
//! runs it against every backend.

pub mod contract;
