//! The Lambda's configuration: the poller's environment (table, queue, agent service) plus the
//! accepted API key hashes, the approval routes' secrets and the inbound webhook triggers'
//! secrets.

use std::sync::Arc;

use flowgate_poller::{ConfigError, PollerConfig, aws_ports};
use flowgate_shared::runtime::SystemClock;

use crate::auth::{ApiKeys, KeyConfigError};
use crate::hooks::HookSecretsError;
use crate::{ApprovalSettings, HookSecrets, Services};

/// `name=sha256hex,...`: the API keys the function accepts (see [`ApiKeys::from_hashes`]).
pub const ENV_API_KEY_HASHES: &str = "FLOWGATE_API_KEY_HASHES";
/// `alice,ops`: the principals whose keys may decide approvals (every key when unset; see
/// [`ApiKeys::may_approve`]).
pub const ENV_API_KEY_APPROVERS: &str = "FLOWGATE_API_KEY_APPROVERS";

/// Why the api function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiConfigError {
    #[error(transparent)]
    Ports(#[from] ConfigError),
    #[error("{ENV_API_KEY_HASHES}: {0}")]
    Keys(#[from] KeyConfigError),
    #[error("{0}")]
    Approvals(String),
    #[error(transparent)]
    Hooks(#[from] HookSecretsError),
    #[error(
        "{ENV_API_KEY_HASHES} is empty: every request would be refused; configure at least \
         one key hash (the SAM template reads them from SSM)"
    )]
    NoKeys,
}

/// Build the services from the process environment (the variables the poller reads plus
/// [`ENV_API_KEY_HASHES`]).
pub async fn services_from_env() -> Result<Services, ApiConfigError> {
    let config = PollerConfig::from_env()?;
    let keys = ApiKeys::from_hashes(&std::env::var(ENV_API_KEY_HASHES).unwrap_or_default())?
        .with_approvers(&std::env::var(ENV_API_KEY_APPROVERS).unwrap_or_default());
    if keys.is_empty() {
        return Err(ApiConfigError::NoKeys);
    }
    let approvals = ApprovalSettings::from_env().map_err(ApiConfigError::Approvals)?;
    let hooks = HookSecrets::from_env()?;
    let ports = aws_ports(&config).await?;
    let executor = Arc::new(ports.executor()?);
    Ok(Services {
        store: ports.store.clone(),
        workflows: ports.store,
        queue: ports.queue,
        executor,
        agent: ports.agent,
        clock: Arc::new(SystemClock),
        keys: Arc::new(keys),
        notifier: ports.notifier,
        approvals: Arc::new(approvals),
        hooks: Arc::new(hooks),
    })
}
