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

/// The EventBridge Scheduler group workflows' schedules live in; unset: schedules are not
/// synced (a deployment without schedules, or `flowgate serve`, which keeps its own).
pub const ENV_SCHEDULE_GROUP: &str = "FLOWGATE_SCHEDULE_GROUP";
/// The triggers function's ARN: what schedules invoke.
pub const ENV_SCHEDULE_TARGET_ARN: &str = "FLOWGATE_SCHEDULE_TARGET_ARN";
/// The role EventBridge Scheduler assumes to invoke the triggers function.
pub const ENV_SCHEDULE_ROLE_ARN: &str = "FLOWGATE_SCHEDULE_ROLE_ARN";

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
    #[error(
        "{ENV_SCHEDULE_GROUP} is set but {0} is not: schedules need the triggers function's ARN          ({ENV_SCHEDULE_TARGET_ARN}) and the role that invokes it ({ENV_SCHEDULE_ROLE_ARN})"
    )]
    Schedules(&'static str),
}

/// The scheduler named by [`ENV_SCHEDULE_GROUP`] and its companions, if configured.
pub async fn scheduler_from_env()
-> Result<Option<Arc<dyn flowgate_shared::ports::Scheduler>>, ApiConfigError> {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    let Some(group) = var(ENV_SCHEDULE_GROUP) else {
        return Ok(None);
    };
    let target =
        var(ENV_SCHEDULE_TARGET_ARN).ok_or(ApiConfigError::Schedules(ENV_SCHEDULE_TARGET_ARN))?;
    let role =
        var(ENV_SCHEDULE_ROLE_ARN).ok_or(ApiConfigError::Schedules(ENV_SCHEDULE_ROLE_ARN))?;
    Ok(Some(Arc::new(
        flowgate_shared::adapters::eventbridge::EventBridgeScheduler::from_env(group, target, role)
            .await,
    )))
}

/// Build the services from the process environment (the variables the poller reads plus
/// [`ENV_API_KEY_HASHES`]).
pub async fn services_from_env() -> Result<Services, ApiConfigError> {
    services_with(true).await
}

/// The services of the triggers function: the same as the api function's, except that it
/// needs no API keys (it answers schedules, the sweep and signed webhook deliveries only).
pub async fn trigger_services_from_env() -> Result<Services, ApiConfigError> {
    services_with(false).await
}

async fn services_with(require_keys: bool) -> Result<Services, ApiConfigError> {
    let config = PollerConfig::from_env()?;
    let keys = ApiKeys::from_hashes(&std::env::var(ENV_API_KEY_HASHES).unwrap_or_default())?
        .with_approvers(&std::env::var(ENV_API_KEY_APPROVERS).unwrap_or_default());
    if require_keys && keys.is_empty() {
        return Err(ApiConfigError::NoKeys);
    }
    let approvals = ApprovalSettings::from_env().map_err(ApiConfigError::Approvals)?;
    let hooks = HookSecrets::from_env()?;
    let ports = aws_ports(&config).await?;
    let scheduler = scheduler_from_env().await?;
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
        scheduler,
    })
}
