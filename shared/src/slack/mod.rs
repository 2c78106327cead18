//! Slack: the Web API client Flowgate posts approvals and run threads with, the Block Kit
//! layouts of those messages, and the parser of interaction payloads (button clicks and modal
//! submissions) that come back.
//!
//! Request signing is verified elsewhere, before [`parse_interaction`] sees a body. The ids the
//! layouts put in messages (see [`blocks`]) are what the interaction handler reads back, so both
//! sides use the constants defined there.

pub mod blocks;
pub mod client;
pub mod error;
pub mod interaction;

pub use blocks::{
    APPROVAL_BLOCK_PREFIX, ApprovalRequest, ButtonAction, COMMENT_ACTION_ID, COMMENT_BLOCK_ID,
    DECISION_CALLBACK_ID, DecisionMetadata, RunThreadView, StepLine, approval_block_id,
    approval_closed, approval_id_from_block_id, approval_progress, approval_request,
    decision_modal, escape, event_reply, run_thread, run_thread_view,
};
pub use client::{DEFAULT_BASE_URL, DEFAULT_TIMEOUT, PostedMessage, SlackClient, SlackConfig};
pub use error::SlackError;
pub use interaction::{
    ActionClick, BlockActions, Interaction, InteractionError, ViewSubmission,
    parse_decision_metadata, parse_interaction,
};
