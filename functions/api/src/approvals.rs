//! How approval decisions are verified: Slack's signing secret, the Standard Webhooks secrets
//! for signed decisions, and the principal signed decisions act as.

use flowgate_shared::signing::WebhookSecret;

/// Verification settings for the approval routes. Every part is optional: a route whose
/// secret is not configured refuses every request (it never accepts unsigned input).
#[derive(Default)]
pub struct ApprovalSettings {
    /// The Slack app's signing secret (`/slack/interactions`).
    pub slack_signing_secret: Option<Vec<u8>>,
    /// Secrets accepted on signed `POST /v1/approvals/{id}/decision` requests (several during
    /// a rotation).
    pub webhook_secrets: Vec<WebhookSecret>,
    /// Who a signed decision acts as (an approver entry, e.g. `webhook:ci`).
    pub webhook_principal: String,
}

impl std::fmt::Debug for ApprovalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalSettings")
            .field(
                "slack_signing_secret",
                &self.slack_signing_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("webhook_principal", &self.webhook_principal)
            .finish()
    }
}

/// The Slack app's signing secret.
pub const ENV_SLACK_SIGNING_SECRET: &str = "FLOWGATE_SLACK_SIGNING_SECRET";
/// Standard Webhooks secrets (`whsec_…`, separated by spaces or commas) for signed decisions.
pub const ENV_APPROVAL_WEBHOOK_SECRETS: &str = "FLOWGATE_APPROVAL_WEBHOOK_SECRETS";
/// Who signed decisions act as (default `webhook`).
pub const ENV_APPROVAL_WEBHOOK_PRINCIPAL: &str = "FLOWGATE_APPROVAL_WEBHOOK_PRINCIPAL";

impl ApprovalSettings {
    /// Blank values count as unset; a malformed webhook secret is an error naming it by
    /// position (never by value).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let read = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut webhook_secrets = Vec::new();
        if let Some(list) = read(ENV_APPROVAL_WEBHOOK_SECRETS) {
            for (i, text) in list.split([' ', ',']).filter(|t| !t.is_empty()).enumerate() {
                webhook_secrets.push(WebhookSecret::parse(text).map_err(|e| {
                    format!(
                        "{ENV_APPROVAL_WEBHOOK_SECRETS}: secret {} is not usable: {e}",
                        i + 1
                    )
                })?);
            }
        }
        Ok(ApprovalSettings {
            slack_signing_secret: read(ENV_SLACK_SIGNING_SECRET).map(String::into_bytes),
            webhook_secrets,
            webhook_principal: read(ENV_APPROVAL_WEBHOOK_PRINCIPAL)
                .unwrap_or_else(|| "webhook".to_string()),
        })
    }
}
