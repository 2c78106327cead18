//! Telling people and other systems what runs are doing: the Slack run thread and approval
//! messages, and outbound webhooks.
//!
//! The engine's notification effects (`RequestApproval`, `RemindApproval`, `CloseApproval`,
//! `Emit`) become [`Delivery`] work messages instead of being sent inline, so a slow or failing
//! receiver (Slack rate limits, a subscriber's server down) is retried with backoff on its own
//! and never holds up a run or an approval click. Each delivery is safe to repeat: Slack
//! messages are found again through stored references, webhook messages carry a stable
//! `webhook-id` receivers dedupe on.

pub mod config;
pub mod slack;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ApprovalStatus, Millis};
use crate::ports::RecordStore;

/// One thing to send, carried by [`crate::ports::WorkMessage::Deliver`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delivery {
    /// Post the approval request (buttons) in the run's thread, or tell escalated approvers.
    ApprovalRequested {
        step: String,
        approval_id: String,
        #[serde(default)]
        escalation: bool,
        /// The people newly asked (escalations).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<String>,
    },
    /// Remind the approvers of a pending approval.
    ApprovalReminder {
        step: String,
        approval_id: String,
        reminder: u32,
    },
    /// Show the decision on the approval message (buttons removed).
    ApprovalClosed {
        step: String,
        approval_id: String,
        status: ApprovalStatus,
        /// The approval as it was closed: a later attempt may have replaced it in the run by
        /// the time this delivery (or a retry of it) runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<crate::model::ApprovalState>,
    },
    /// A run lifecycle event: refresh the run thread, reply in it, fan out to webhooks.
    Lifecycle {
        event: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default)]
        data: Value,
        at: Millis,
    },
    /// One outbound webhook message to one subscription.
    Webhook {
        subscription_id: String,
        /// `webhook-id`: stable across retries, so receivers can drop duplicates.
        message_id: String,
        event: String,
        payload: Value,
    },
    /// A message only `user` sees (an approval click that changed nothing, and why).
    SlackEphemeral {
        channel: String,
        user: String,
        text: String,
    },
}

impl Delivery {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Delivery::ApprovalRequested { .. } => "approval_requested",
            Delivery::ApprovalReminder { .. } => "approval_reminder",
            Delivery::ApprovalClosed { .. } => "approval_closed",
            Delivery::Lifecycle { .. } => "lifecycle",
            Delivery::Webhook { .. } => "webhook",
            Delivery::SlackEphemeral { .. } => "slack_ephemeral",
        }
    }
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Sent (or nothing to send).
    Done,
    /// Follow-up deliveries to queue (a lifecycle event fanning out to webhook subscriptions).
    Then(Vec<Delivery>),
    /// Failed in a way that may pass: try again after `after`.
    Retry { after: Duration, error: String },
    /// Failed for good (bad configuration, receiver gone): logged, not retried.
    GiveUp(String),
}

/// Where links in messages point (the public base URL of the HTTP API), and the key approval
/// links are signed with.
#[derive(Clone, Default)]
pub struct LinkConfig {
    /// e.g. `https://abc.execute-api.eu-west-1.amazonaws.com`; no links when unset.
    pub public_url: Option<String>,
    /// HMAC key of one-time approval links; no links when unset.
    pub link_key: Option<Vec<u8>>,
    /// How long an approval link stays valid.
    pub link_ttl: Duration,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("public_url", &self.public_url)
            .field("link_key", &self.link_key.as_ref().map(|_| "<redacted>"))
            .field("link_ttl", &self.link_ttl)
            .finish()
    }
}

impl LinkConfig {
    /// The API URL of a run, when a public URL is configured.
    pub fn run_url(&self, run_id: &str) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|u| format!("{}/v1/runs/{run_id}", u.trim_end_matches('/')))
    }
}

/// Sends deliveries. Built once per process; every part is optional (no Slack token: Slack
/// deliveries are logged only).
#[derive(Debug, Clone)]
pub struct Notifier {
    pub(crate) slack: Option<slack::SlackOut>,
    pub(crate) webhooks: webhooks::Webhooks,
    pub(crate) links: LinkConfig,
}

impl Notifier {
    /// A notifier over `records` (Slack message references, webhook subscriptions and their
    /// delivery logs), posting to Slack when `slack` is given.
    pub fn new(
        records: Arc<dyn RecordStore>,
        slack: Option<crate::slack::SlackClient>,
        default_channel: Option<String>,
        links: LinkConfig,
    ) -> Self {
        Notifier {
            slack: slack
                .map(|client| slack::SlackOut::new(client, records.clone(), default_channel)),
            webhooks: webhooks::Webhooks::new(records),
            links,
        }
    }

    pub fn links(&self) -> &LinkConfig {
        &self.links
    }

    pub fn slack_client(&self) -> Option<&crate::slack::SlackClient> {
        self.slack.as_ref().map(|s| &s.client)
    }

    pub fn webhooks(&self) -> &webhooks::Webhooks {
        &self.webhooks
    }

    /// Retry failed webhook deliveries on `schedule` instead of
    /// [`webhooks::DEFAULT_BACKOFF`] (about three days): for tests and simulations that must
    /// see a receiver given up on.
    pub fn with_webhook_backoff(mut self, schedule: Vec<std::time::Duration>) -> Self {
        self.webhooks = self.webhooks.with_backoff(schedule);
        self
    }
}

/// Who a link decides as when the approval lists no approver the link could be for.
pub const LINK_PRINCIPAL: &str = "link";

/// One-time approval links (approve, reject) for an approval, one pair per approver that is not
/// a Slack user or group (those decide with the buttons), or one pair acting as
/// [`LINK_PRINCIPAL`] when anyone may decide. `None` without a link key or public URL.
///
/// Each link is signed, expires (`link_ttl`, or the approval's own expiry if sooner), and is
/// bound to one approval, one action and one approver: using it twice is a repeated decision by
/// the same approver, which changes nothing.
pub fn approval_links(
    links: &LinkConfig,
    approval: &crate::model::ApprovalState,
    now_secs: i64,
) -> Option<Value> {
    let key = links.link_key.as_ref()?;
    let base = links.public_url.as_ref()?.trim_end_matches('/').to_string();
    let mut expires = now_secs + i64::try_from(links.link_ttl.as_secs()).unwrap_or(86_400);
    if let Some(at) = approval.expires_at {
        expires = expires.min(at / 1000);
    }
    let approvers: Vec<String> = if approval.approvers.is_empty() {
        vec![LINK_PRINCIPAL.to_string()]
    } else {
        approval
            .approvers
            .iter()
            .filter(|a| !is_slack_id(a))
            .cloned()
            .collect()
    };
    if approvers.is_empty() {
        return None;
    }
    let mut out = serde_json::Map::new();
    for approver in approvers {
        let mut actions = serde_json::Map::new();
        for action in ["approve", "reject"] {
            let claims = crate::signing::LinkClaims::new(&approval.id, action, &approver, expires);
            let token = crate::signing::sign_link(key, &claims);
            actions.insert(
                action.to_string(),
                Value::String(format!("{base}/approvals/link/{token}")),
            );
        }
        out.insert(approver, Value::Object(actions));
    }
    Some(Value::Object(out))
}

/// Slack user (`U…`, `W…`, `slack:…`) or user group (`S…`) ids, which decide in Slack.
pub fn is_slack_id(approver: &str) -> bool {
    if approver.starts_with("slack:") {
        return true;
    }
    (8..=20).contains(&approver.len())
        && matches!(approver.as_bytes().first(), Some(b'U' | b'W' | b'S'))
        && approver
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}
