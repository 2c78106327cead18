//! The Lambda functions' configuration, read once at cold start. Each of the three functions
//! built on this crate (api, approvals, triggers) reads only the settings its routes use, so
//! its environment (and its IAM role) holds no more than it needs; `infra/template.yaml` sets
//! exactly these variables, and `tests/tests/template.rs` checks that the two agree by
//! recording every name [`FunctionConfig::from_lookup`] asks for.

use std::sync::Arc;

use flowgate_poller::{AwsPorts, ConfigError, InitClock, PollerConfig, aws_ports_from, warm_one};
use flowgate_shared::adapters::SdkConfig;
use flowgate_shared::adapters::eventbridge::EventBridgeScheduler;
use flowgate_shared::runtime::SystemClock;

use crate::auth::{ApiKeys, KeyConfigError};
use crate::hooks::{ENV_HOOK_SECRETS, HookSecretsError};
use crate::mcp::ENV_MCP_ALLOWED_HOSTS;
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

/// Which Lambda function is starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `flowgate-api`: `/v1/*`, `/mcp`, `/openapi.json`, `/healthz`. API keys, schedule sync,
    /// the MCP host list.
    Api,
    /// `flowgate-approvals`: Slack interactivity, approval decisions and links. API keys (for
    /// decisions by key) and the Slack and Standard Webhooks secrets.
    Approvals,
    /// `flowgate-triggers`: scheduled starts, the sweep, `/hooks/*`. No API keys; the inbound
    /// webhook secrets and the scheduler (the sweep reconciles schedules).
    Triggers,
}

impl Function {
    /// The short name in logs (`api`, `approvals`, `triggers`).
    pub fn name(self) -> &'static str {
        match self {
            Function::Api => "api",
            Function::Approvals => "approvals",
            Function::Triggers => "triggers",
        }
    }
}

/// Why a function cannot start.
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
        "{ENV_SCHEDULE_GROUP} is set but {0} is not: schedules need the triggers function's ARN \
         ({ENV_SCHEDULE_TARGET_ARN}) and the role that invokes it ({ENV_SCHEDULE_ROLE_ARN})"
    )]
    Schedules(&'static str),
}

/// Where workflows' schedules are kept on EventBridge Scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSettings {
    pub group: String,
    pub target_arn: String,
    pub role_arn: String,
}

/// Everything one function reads from its environment.
#[derive(Debug)]
pub struct FunctionConfig {
    /// Table, queue, agent service and notifier (the poller's settings).
    pub ports: PollerConfig,
    pub keys: ApiKeys,
    pub approvals: ApprovalSettings,
    pub hooks: HookSecrets,
    pub schedules: Option<ScheduleSettings>,
    /// Extra `Host` names `/mcp` serves ([`ENV_MCP_ALLOWED_HOSTS`]).
    pub mcp_allowed_hosts: Option<String>,
}

impl FunctionConfig {
    /// Read `function`'s settings from the process environment.
    pub fn from_env(function: Function) -> Result<Self, ApiConfigError> {
        Self::from_lookup(function, |name| std::env::var(name).ok())
    }

    /// Read `function`'s settings through `get`. Every variable the function uses is asked
    /// for before anything is validated, so a recording `get` sees the whole list even when
    /// the values are missing (blank counts as unset).
    pub fn from_lookup(
        function: Function,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ApiConfigError> {
        use Function::*;
        let read = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let ports = PollerConfig::from_lookup(&get);
        let (hashes, approvers) = match function {
            Api | Approvals => (read(ENV_API_KEY_HASHES), read(ENV_API_KEY_APPROVERS)),
            Triggers => (None, None),
        };
        let approvals = match function {
            Approvals => ApprovalSettings::from_lookup(&get),
            Api | Triggers => Ok(ApprovalSettings::default()),
        };
        let hooks = match function {
            Triggers => read(ENV_HOOK_SECRETS),
            Api | Approvals => None,
        };
        let schedules = match function {
            Api | Triggers => Some((
                read(ENV_SCHEDULE_GROUP),
                read(ENV_SCHEDULE_TARGET_ARN),
                read(ENV_SCHEDULE_ROLE_ARN),
            )),
            Approvals => None,
        };
        let mcp_allowed_hosts = match function {
            Api => read(ENV_MCP_ALLOWED_HOSTS),
            Approvals | Triggers => None,
        };

        let ports = ports?;
        let keys = ApiKeys::from_hashes(hashes.as_deref().unwrap_or_default())?
            .with_approvers(approvers.as_deref().unwrap_or_default());
        if function != Triggers && keys.is_empty() {
            return Err(ApiConfigError::NoKeys);
        }
        let approvals = approvals.map_err(ApiConfigError::Approvals)?;
        let hooks = HookSecrets::parse(hooks.as_deref().unwrap_or_default())?;
        let schedules = match schedules {
            Some((Some(group), target, role)) => Some(ScheduleSettings {
                group,
                target_arn: target.ok_or(ApiConfigError::Schedules(ENV_SCHEDULE_TARGET_ARN))?,
                role_arn: role.ok_or(ApiConfigError::Schedules(ENV_SCHEDULE_ROLE_ARN))?,
            }),
            _ => None,
        };
        Ok(FunctionConfig {
            ports,
            keys,
            approvals,
            hooks,
            schedules,
            mcp_allowed_hosts,
        })
    }
}

/// The EventBridge Scheduler adapter for `settings`, on the function's SDK configuration.
pub fn scheduler_from(
    settings: Option<ScheduleSettings>,
    sdk: &SdkConfig,
) -> Option<Arc<EventBridgeScheduler>> {
    settings.map(|s| {
        Arc::new(EventBridgeScheduler::from_sdk_config(
            sdk,
            s.group,
            s.target_arn,
            s.role_arn,
        ))
    })
}

/// Build the services from `ports` (built with [`aws_ports_from`]) and `scheduler` (from
/// [`scheduler_from`]), all on one SDK configuration.
pub fn services_from(
    config: FunctionConfig,
    ports: AwsPorts,
    scheduler: Option<Arc<EventBridgeScheduler>>,
) -> Result<Services, ApiConfigError> {
    let executor = Arc::new(ports.executor()?);
    Ok(Services {
        store: ports.store.clone(),
        workflows: ports.store,
        queue: ports.queue,
        executor,
        agent: ports.agent,
        clock: Arc::new(SystemClock),
        keys: Arc::new(config.keys),
        notifier: ports.notifier,
        approvals: Arc::new(config.approvals),
        hooks: Arc::new(config.hooks),
        scheduler: scheduler.map(|s| s as Arc<dyn flowgate_shared::ports::Scheduler>),
    })
}

/// A started function: its services and the settings its router needs besides them.
#[derive(Debug)]
pub struct Started {
    pub services: Services,
    /// Extra `/mcp` hosts (the api function only).
    pub mcp_allowed_hosts: Option<String>,
}

/// Everything a function's `main` does before the runtime loop, all inside Lambda's INIT
/// phase: read the environment, load the SDK configuration once, build every client on it,
/// and warm the connections the first invocation uses (DynamoDB, SQS, the agent service).
pub async fn init_from_env(function: Function) -> Result<Started, ApiConfigError> {
    let mut clock = InitClock::start();
    let config = FunctionConfig::from_env(function)?;
    let mcp_allowed_hosts = config.mcp_allowed_hosts.clone();
    let sdk = flowgate_shared::adapters::aws_config(None).await;
    clock.sdk_loaded();
    let ports = aws_ports_from(&config.ports, &sdk)?;
    let scheduler = scheduler_from(config.schedules.clone(), &sdk);
    let services = services_from(config, ports.clone(), scheduler.clone())?;
    clock.built();
    // The triggers function's sweep calls Scheduler every minute: its connection too. The api
    // function calls Scheduler only when a workflow is stored, so it does not pay for it here.
    let scheduler_warm = async {
        match (&scheduler, function) {
            (Some(s), Function::Triggers) => Some(warm_one("scheduler", s.warm_up()).await),
            _ => None,
        }
    };
    let (mut warm, scheduler_warm) = tokio::join!(ports.warm_up(), scheduler_warm);
    if let Some(outcome) = scheduler_warm {
        warm.add(outcome);
    }
    clock.ready(function.name(), &warm);
    Ok(Started {
        services,
        mcp_allowed_hosts,
    })
}
