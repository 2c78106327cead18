//! The notifier's configuration, read once from the environment by every function (and by
//! `flowgate serve` from its flags, which default to the same variables).

use std::sync::Arc;
use std::time::Duration;

use super::{LinkConfig, Notifier};
use crate::ports::RecordStore;
use crate::slack::{SlackClient, SlackConfig, SlackError};

/// Slack bot token (`xoxb-…`); Slack stays quiet (log only) without it.
pub const ENV_SLACK_BOT_TOKEN: &str = "FLOWGATE_SLACK_BOT_TOKEN";
/// The channel for run threads when a workflow names none.
pub const ENV_SLACK_CHANNEL: &str = "FLOWGATE_SLACK_CHANNEL";
/// The Slack Web API root (tests point it at a local server).
pub const ENV_SLACK_API_URL: &str = "FLOWGATE_SLACK_API_URL";
/// Public base URL of the HTTP API, for links in messages.
pub const ENV_PUBLIC_URL: &str = "FLOWGATE_PUBLIC_URL";
/// Key (at least 32 characters) one-time approval links are signed with; no links without it.
pub const ENV_LINK_KEY: &str = "FLOWGATE_APPROVAL_LINK_KEY";

/// Default validity of an approval link.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// Everything [`Notifier`] needs besides the record store.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NotifyConfig {
    pub slack_token: Option<String>,
    pub slack_channel: Option<String>,
    pub slack_api_url: Option<String>,
    pub public_url: Option<String>,
    pub link_key: Option<String>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field(
                "slack_token",
                &self.slack_token.as_ref().map(|_| "<redacted>"),
            )
            .field("slack_channel", &self.slack_channel)
            .field("slack_api_url", &self.slack_api_url)
            .field("public_url", &self.public_url)
            .field("link_key", &self.link_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a notifier cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifyConfigError {
    #[error("{ENV_LINK_KEY} must be at least 32 characters (it signs approval links)")]
    ShortLinkKey,
    #[error("the Slack client cannot be built: {0}")]
    Slack(#[from] SlackError),
}

impl NotifyConfig {
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Blank values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let read = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        NotifyConfig {
            slack_token: read(ENV_SLACK_BOT_TOKEN),
            slack_channel: read(ENV_SLACK_CHANNEL),
            slack_api_url: read(ENV_SLACK_API_URL),
            public_url: read(ENV_PUBLIC_URL),
            link_key: read(ENV_LINK_KEY),
        }
    }

    pub fn build(&self, records: Arc<dyn RecordStore>) -> Result<Notifier, NotifyConfigError> {
        let slack = match &self.slack_token {
            Some(token) => {
                let mut config = SlackConfig::new(token.clone());
                if let Some(url) = &self.slack_api_url {
                    config.base_url = url.clone();
                }
                Some(SlackClient::new(config)?)
            }
            None => None,
        };
        let link_key = match &self.link_key {
            Some(k) if k.len() < 32 => return Err(NotifyConfigError::ShortLinkKey),
            Some(k) => Some(k.as_bytes().to_vec()),
            None => None,
        };
        Ok(Notifier::new(
            records,
            slack,
            self.slack_channel.clone(),
            LinkConfig {
                public_url: self.public_url.clone(),
                link_key,
                link_ttl: DEFAULT_LINK_TTL,
            },
        ))
    }
}
