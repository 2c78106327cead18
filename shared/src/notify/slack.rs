//! The Slack side: one thread per run (a parent message updated in place, replies for events),
//! approval messages with buttons in that thread, reminders, escalations and decisions.
//!
//! Message references are kept in the record store (`slack-thread/{run_id}`,
//! `slack-approval/{approval_id}`), so a repeated delivery updates the message it posted before
//! instead of posting a second one.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::{LinkConfig, Outcome};
use crate::definition::{StepAction, WorkflowDefinition};
use crate::model::{ApprovalState, ApprovalStatus, Run};
use crate::ports::RecordStore;
use crate::slack::blocks::{self, ApprovalRequest};
use crate::slack::{SlackClient, SlackError};

/// Record collection of run thread parents, by run id.
pub const THREADS: &str = "slack-thread";
/// Record collection of approval messages, by approval id.
pub const APPROVAL_MESSAGES: &str = "slack-approval";

/// Where a message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
}

/// Posts to Slack for the notifier.
#[derive(Clone)]
pub struct SlackOut {
    pub(crate) client: SlackClient,
    records: Arc<dyn RecordStore>,
    default_channel: Option<String>,
}

impl std::fmt::Debug for SlackOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackOut")
            .field("client", &self.client)
            .field("default_channel", &self.default_channel)
            .finish_non_exhaustive()
    }
}

/// A Slack failure as a delivery outcome: retry what may pass (rate limits, 5xx, timeouts)
/// after Slack's `Retry-After` or an exponential delay; give up on the rest (a missing
/// channel, a revoked token), which no retry fixes.
pub(crate) fn outcome_of(e: SlackError, attempt: u32) -> Outcome {
    if e.is_retryable() {
        let after = e
            .retry_after()
            .unwrap_or_else(|| Duration::from_secs(2u64.saturating_pow(attempt.min(9))));
        Outcome::Retry {
            after,
            error: e.to_string(),
        }
    } else {
        Outcome::GiveUp(e.to_string())
    }
}

macro_rules! slack_try {
    ($e:expr, $attempt:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return outcome_of(e, $attempt),
        }
    };
}

impl SlackOut {
    pub fn new(
        client: SlackClient,
        records: Arc<dyn RecordStore>,
        default_channel: Option<String>,
    ) -> Self {
        SlackOut {
            client,
            records,
            default_channel,
        }
    }

    /// The run's channel: the approval step's `slack_channel`, else the first workflow
    /// notification naming one, else the configured default. `None`: Slack stays quiet.
    pub fn channel_for(&self, def: &WorkflowDefinition) -> Option<String> {
        def.steps
            .iter()
            .find_map(|d| match &d.action {
                StepAction::Approval(a) => a.slack_channel.clone(),
                _ => None,
            })
            .or_else(|| {
                def.notifications
                    .iter()
                    .find_map(|n| n.slack_channel.clone())
            })
            .or_else(|| self.default_channel.clone())
    }

    async fn message_ref(&self, collection: &str, id: &str) -> Result<Option<MessageRef>, String> {
        match self.records.get_record(collection, id).await {
            Ok(Some(v)) => serde_json::from_value(v).map(Some).map_err(|e| {
                format!("stored Slack reference {collection}/{id} is unreadable: {e}")
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The run's thread parent, posting it first if there is none yet.
    async fn thread(
        &self,
        run: &Run,
        def: &WorkflowDefinition,
        links: &LinkConfig,
        attempt: u32,
    ) -> Result<Option<MessageRef>, Outcome> {
        let Some(channel) = self.channel_for(def) else {
            return Ok(None);
        };
        match self.message_ref(THREADS, &run.id).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {}
            Err(e) => return Err(retry_store(e, attempt)),
        }
        let (text, blocks) =
            blocks::run_thread(&blocks::run_thread_view(run, def, links.run_url(&run.id)));
        let posted = self
            .client
            .post_message(&channel, &text, Some(&blocks), None)
            .await
            .map_err(|e| outcome_of(e, attempt))?;
        let parent = MessageRef {
            channel: posted.channel,
            ts: posted.ts,
        };
        let value = serde_json::to_value(&parent).unwrap_or(Value::Null);
        match self
            .records
            .create_record(THREADS, &run.id, &value, None)
            .await
        {
            Ok(true) => Ok(Some(parent)),
            // Another delivery posted a parent at the same time: use theirs.
            Ok(false) => match self.message_ref(THREADS, &run.id).await {
                Ok(found) => Ok(found.or(Some(parent))),
                Err(e) => Err(retry_store(e, attempt)),
            },
            Err(e) => Err(retry_store(e.to_string(), attempt)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// A lifecycle event: refresh the parent (status and per-step progress) and reply with
    /// the event. Approval requests get their own message, so they are not replied to here.
    pub async fn lifecycle(
        &self,
        run: &Run,
        def: &WorkflowDefinition,
        event: &str,
        step: Option<&str>,
        data: &Value,
        links: &LinkConfig,
        attempt: u32,
    ) -> Outcome {
        let parent = match self.thread(run, def, links, attempt).await {
            Ok(Some(parent)) => parent,
            Ok(None) => return Outcome::Done,
            Err(outcome) => return outcome,
        };
        let run_url = links.run_url(&run.id);
        let (text, blocks) =
            blocks::run_thread(&blocks::run_thread_view(run, def, run_url.clone()));
        slack_try!(
            self.client
                .update_message(&parent.channel, &parent.ts, &text, Some(&blocks))
                .await,
            attempt
        );
        if event == "approval.decided"
            && data.get("status").and_then(Value::as_str) == Some("pending")
            && let Some(id) = data.get("approval_id").and_then(Value::as_str)
        {
            // N of M: show who approved so far, keep the buttons.
            return self
                .update_approval(run, def, id, None, links, attempt)
                .await;
        }
        if matches!(event, "approval.requested" | "run.started") {
            return Outcome::Done;
        }
        let reply = blocks::event_reply(event, step, data, run_url.as_deref());
        slack_try!(
            self.client
                .post_message(&parent.channel, &reply, None, Some(&parent.ts))
                .await,
            attempt
        );
        Outcome::Done
    }

    fn request_view(
        &self,
        run: &Run,
        def: &WorkflowDefinition,
        step: Option<&str>,
        approval: &ApprovalState,
        links: &LinkConfig,
    ) -> ApprovalRequest {
        ApprovalRequest {
            run_id: run.id.clone(),
            workflow: def.display_name().to_string(),
            step: step.unwrap_or("budget").to_string(),
            approval_id: approval.id.clone(),
            message: approval.message.clone(),
            approvers: approval.approvers.clone(),
            required: approval.required,
            expires_at: approval.expires_at,
            run_url: links.run_url(&run.id),
            reminder: false,
        }
    }

    /// Post the approval message (with buttons) in the run's thread, once; an escalation
    /// replies in the thread mentioning the people newly asked.
    #[allow(clippy::too_many_arguments)]
    pub async fn approval_requested(
        &self,
        run: &Run,
        def: &WorkflowDefinition,
        approval_id: &str,
        escalation: bool,
        newly_asked: &[String],
        links: &LinkConfig,
        attempt: u32,
    ) -> Outcome {
        let Some((step, approval)) = run.approval(approval_id) else {
            return Outcome::GiveUp(format!("run {} has no approval {approval_id}", run.id));
        };
        if approval.status != ApprovalStatus::Pending {
            debug!(
                approval_id,
                "the approval closed before its message went out; not posting it"
            );
            return Outcome::Done;
        }
        let parent = match self.thread(run, def, links, attempt).await {
            Ok(Some(parent)) => parent,
            Ok(None) => {
                info!(
                    approval_id,
                    "no Slack channel for this run; the approval is not posted to Slack"
                );
                return Outcome::Done;
            }
            Err(outcome) => return outcome,
        };
        if escalation {
            let who: Vec<String> = newly_asked.iter().map(|p| blocks::mention(p)).collect();
            let text = format!(
                ":rotating_light: No decision yet on approval {approval_id}; escalated to {}.",
                who.join(", ")
            );
            slack_try!(
                self.client
                    .post_message(&parent.channel, &text, None, Some(&parent.ts))
                    .await,
                attempt
            );
            return Outcome::Done;
        }
        match self.message_ref(APPROVAL_MESSAGES, approval_id).await {
            Ok(Some(_)) => return Outcome::Done, // already posted
            Ok(None) => {}
            Err(e) => return retry_store(e, attempt),
        }
        let view = self.request_view(run, def, step, approval, links);
        let (text, blocks) = blocks::approval_request(&view);
        let posted = slack_try!(
            self.client
                .post_message(&parent.channel, &text, Some(&blocks), Some(&parent.ts))
                .await,
            attempt
        );
        let reference = MessageRef {
            channel: posted.channel,
            ts: posted.ts,
        };
        let value = serde_json::to_value(&reference).unwrap_or(Value::Null);
        if let Err(e) = self
            .records
            .create_record(APPROVAL_MESSAGES, approval_id, &value, None)
            .await
        {
            warn!(approval_id, error = %e, "approval message posted but its reference was not stored; its buttons will not be updated after the decision");
        }
        Outcome::Done
    }

    /// A reminder in the thread, mentioning the approvers.
    pub async fn reminder(
        &self,
        run: &Run,
        def: &WorkflowDefinition,
        approval_id: &str,
        reminder: u32,
        links: &LinkConfig,
        attempt: u32,
    ) -> Outcome {
        let Some((step, approval)) = run.approval(approval_id) else {
            return Outcome::Done;
        };
        if approval.status != ApprovalStatus::Pending {
            return Outcome::Done;
        }
        let parent = match self.thread(run, def, links, attempt).await {
            Ok(Some(parent)) => parent,
            Ok(None) => return Outcome::Done,
            Err(outcome) => return outcome,
        };
        let mut view = self.request_view(run, def, step, approval, links);
        view.reminder = true;
        let (text, _) = blocks::approval_request(&view);
        let who: Vec<String> = approval
            .approvers
            .iter()
            .map(|p| blocks::mention(p))
            .collect();
        let text = if who.is_empty() {
            format!("{text} (reminder {reminder})")
        } else {
            format!("{text} (reminder {reminder}) {}", who.join(" "))
        };
        slack_try!(
            self.client
                .post_message(&parent.channel, &text, None, Some(&parent.ts))
                .await,
            attempt
        );
        Outcome::Done
    }

    /// Update the approval message: after a decision its buttons give way to what was decided,
    /// by whom and when; while N of M is still open it shows who approved so far.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_approval(
        &self,
        run: &Run,
        def: &WorkflowDefinition,
        approval_id: &str,
        closed: Option<(&str, &ApprovalState)>,
        links: &LinkConfig,
        attempt: u32,
    ) -> Outcome {
        // The run's current state, else the approval as it was closed (a newer attempt may
        // have replaced it since).
        let found = run
            .approval(approval_id)
            .or_else(|| closed.map(|(step, a)| (Some(step).filter(|s| !s.is_empty()), a)));
        let Some((step, approval)) = found else {
            return Outcome::Done;
        };
        let reference = match self.message_ref(APPROVAL_MESSAGES, approval_id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Done,
            Err(e) => return retry_store(e, attempt),
        };
        let view = self.request_view(run, def, step, approval, links);
        let (text, blocks) = if approval.status == ApprovalStatus::Pending {
            blocks::approval_progress(&view, &approval.decisions)
        } else {
            blocks::approval_closed(&view, approval.status, &approval.decisions)
        };
        slack_try!(
            self.client
                .update_message(&reference.channel, &reference.ts, &text, Some(&blocks))
                .await,
            attempt
        );
        Outcome::Done
    }

    pub async fn ephemeral(&self, channel: &str, user: &str, text: &str, attempt: u32) -> Outcome {
        slack_try!(
            self.client.post_ephemeral(channel, user, text).await,
            attempt
        );
        Outcome::Done
    }

    /// A `notify` step's message, in the run's thread when the channel is the run's.
    pub async fn notify_step(
        &self,
        run: &Run,
        def: &WorkflowDefinition,
        channel: &str,
        message: &str,
        links: &LinkConfig,
    ) -> Result<(), String> {
        let thread_ts = if self.channel_for(def).as_deref() == Some(channel) {
            self.thread(run, def, links, 1)
                .await
                .ok()
                .flatten()
                .map(|p| p.ts)
        } else {
            None
        };
        self.client
            .post_message(channel, message, None, thread_ts.as_deref())
            .await
            .map(|_| ())
            .map_err(|e| format!("Slack notification failed: {e}"))
    }
}

fn retry_store(error: String, attempt: u32) -> Outcome {
    Outcome::Retry {
        after: Duration::from_secs(2u64.saturating_pow(attempt.min(9))),
        error: format!("record store: {error}"),
    }
}
