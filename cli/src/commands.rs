//! The commands that talk to a Flowgate API (`flowgate serve` locally, or the deployed one):
//! start and follow runs, steer them, manage stored workflows, list sessions.
//!
//! Each command is one call (or a short series) through [`FlowgateClient`], printed as concise
//! text, or with `--json` as the API's JSON answer for scripts. [`execute`] takes its output
//! streams, clock and poll interval as parameters so tests drive it against a mock server;
//! [`main`] wires in the real ones and turns the outcome into the exit code.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use flowgate_shared::api::client::{ClientError, DEFAULT_BASE_URL, FlowgateClient};
use flowgate_shared::api::{
    CancelRequest, ListRunsParams, MessageKind, MessageRequest, ProblemView, RetryRequest,
    RollbackRequest, RunDetail, StartRunRequest,
};
use flowgate_shared::definition::parse_definition;
use flowgate_shared::model::{Millis, RunStatus};
use serde_json::{Map, Value};

use crate::output::{Table, clip, cost, duration, now_millis, print_json, time};
use crate::progress::{self, Progress, WaitConfig};
use crate::serve::API_KEY_FILE;

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the run ended without succeeding (run --wait), a definition is invalid, or an API or
     network error happened (stderr names it: the API's message and code)
  2  usage error (unknown flag, missing or malformed argument)";

/// Where to reach the API and how to print its answers; accepted before or after any API
/// command (`flowgate --json runs` and `flowgate runs --json` are the same).
#[derive(Clone, Args)]
pub struct ApiOptions {
    /// Root URL of the Flowgate API.
    #[arg(long, global = true, env = "FLOWGATE_URL", default_value = DEFAULT_BASE_URL, value_name = "URL")]
    pub url: String,
    /// API key, sent in `x-api-key`. Default: the key `flowgate serve` generated into
    /// <data dir>/api-key, where the data dir is $FLOWGATE_DATA_DIR or $HOME/.flowgate.
    #[arg(
        long,
        global = true,
        env = "FLOWGATE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Print the API's JSON answer instead of text (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

impl fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiOptions")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .finish()
    }
}

/// The commands that call the API.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Start a run of a stored workflow, or of an agent workflow (`architect`, `implement`, ...)
    /// as a one-step run; with --wait, follow it to the end.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Show a run: status, timings, cost, each step's progress, open approvals.
    Status {
        /// The run's id.
        run_id: String,
    },
    /// List runs (newest first unless --sort/--order say otherwise).
    Runs(RunsArgs),
    /// Print a run's audit log: what happened, who did it, when.
    Events {
        /// The run's id.
        run_id: String,
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Read one page of at most this many events (and print where the next starts) instead
        /// of the whole log.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Cancel a run (its agent runs stop gracefully, or at once with --force).
    Cancel {
        /// The run's id.
        run_id: String,
        /// Kill agent runs at once instead of letting them stop gracefully.
        #[arg(long)]
        force: bool,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a message to a run's agent (feedback while it works).
    Send {
        /// The run's id.
        run_id: String,
        /// The message.
        message: String,
        /// Who the message speaks as.
        #[arg(long = "type", value_enum, default_value_t = MessageType::User)]
        kind: MessageType,
        /// The agent step to send to (default: the running one).
        #[arg(long)]
        step: Option<String>,
    },
    /// Resume a failed run from its failed steps, or from --from-step.
    Retry {
        /// The run's id.
        run_id: String,
        /// Resume from this step (and everything after it).
        #[arg(long, value_name = "STEP")]
        from_step: Option<String>,
    },
    /// Undo a run's finished steps: run their compensations, newest first.
    Rollback {
        /// The run's id.
        run_id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Manage stored workflow definitions.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// List named agent conversations, or show one.
    Sessions {
        /// Show this session (with the steps that used it).
        name: Option<String>,
        /// Only sessions in use by an active run.
        #[arg(long, conflicts_with = "name")]
        active: bool,
    },
    /// List the agent service's workflows (each runnable with `flowgate run <name>`).
    AgentWorkflows,
}

/// `flowgate run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A stored workflow's id, or an agent workflow's name for a one-step run.
    pub workflow: String,
    /// A workflow input; VALUE is read as JSON when it parses (numbers, booleans, arrays,
    /// objects, "quoted strings"), else taken as text. Repeat for each input.
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE", value_parser = parse_input)]
    pub inputs: Vec<(String, Value)>,
    /// The agent's instructions (the `message` input; required by one-step agent runs).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Cap every agent step of the run at this many turns.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub max_turns: Option<u32>,
    /// File the run's agent conversation under this name (to continue it later).
    #[arg(long, value_name = "NAME")]
    pub session_name: Option<String>,
    /// Continue the agent conversation of this earlier session.
    #[arg(long, value_name = "NAME")]
    pub continue_session: Option<String>,
    /// Repository the agent works in (the `repository_url` input).
    #[arg(long = "repo", value_name = "URL")]
    pub repository_url: Option<String>,
    /// Branch the agent works on (the `git_branch` input).
    #[arg(long = "branch", value_name = "BRANCH")]
    pub git_branch: Option<String>,
    /// Makes the start safe to repeat: the same key answers the run it started first.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Follow the run until it ends, showing each step's progress; exit 1 unless it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (e.g. `30m`); the run goes on.
    #[arg(long, requires = "wait", value_parser = crate::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// `flowgate runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs of this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only runs in these statuses (comma-separated, e.g. `running,pending`).
    #[arg(long, value_parser = parse_status_list, value_name = "STATUS[,STATUS...]")]
    pub status: Option<String>,
    /// At most this many runs (1-100; the API's default is 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
    /// Sort key.
    #[arg(long, value_parser = ["started_at", "completed_at", "duration", "cost"])]
    pub sort: Option<String>,
    /// Sort order (default desc).
    #[arg(long, value_parser = ["asc", "desc"])]
    pub order: Option<String>,
    /// Continue a listing: the cursor printed under the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `flowgate workflows ...`.
#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// List stored workflows (latest versions).
    List,
    /// Print a stored definition (YAML; with --json the API's answer).
    Get {
        /// The workflow's id.
        id: String,
        /// An older version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Store a definition file (YAML or JSON) as its workflow's next version. The workflow id
    /// is the file's `id`; the file is checked locally first.
    Put {
        /// The definition file.
        file: PathBuf,
    },
    /// Delete a stored workflow (runs already started keep their version).
    Delete {
        /// The workflow's id.
        id: String,
    },
    /// Check a definition file with the API, without storing it.
    Validate {
        /// The definition file.
        file: PathBuf,
        /// Also check agent workflow names against the agent service.
        #[arg(long)]
        strict: bool,
    },
}

/// `--type` of `flowgate send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageType {
    User,
    System,
}

impl From<MessageType> for MessageKind {
    fn from(t: MessageType) -> Self {
        match t {
            MessageType::User => MessageKind::User,
            MessageType::System => MessageKind::System,
        }
    }
}

/// Why a command failed. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),

    /// The arguments cannot make a valid request (exit code 2, like clap's own errors).
    #[error("{0}")]
    Usage(String),

    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{} is not a valid workflow definition ({count} problem(s) listed above); nothing was \
         sent, fix the file and run the command again",
        path.display()
    )]
    InvalidDefinition { path: PathBuf, count: usize },

    #[error(
        "cannot read the API key file {}: {source}; fix its permissions, or pass the key with \
         --api-key / FLOWGATE_API_KEY",
        path.display()
    )]
    KeyFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `run --wait` saw the run end in another status than succeeded.
    #[error("{}", not_succeeded_message(run_id, *status, error.as_deref()))]
    RunNotSucceeded {
        run_id: String,
        status: RunStatus,
        error: Option<String>,
    },

    /// `run --wait --timeout` ran out before the run ended.
    #[error(
        "run {run_id} is still {} after waiting {} (--timeout); it goes on: follow it with \
         `flowgate status {run_id}` or stop it with `flowgate cancel {run_id}`",
        status.map_or("not started", RunStatus::as_str),
        humantime::format_duration(*waited)
    )]
    WaitTimedOut {
        run_id: String,
        status: Option<RunStatus>,
        waited: Duration,
    },

    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),

    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

fn not_succeeded_message(run_id: &str, status: RunStatus, error: Option<&str>) -> String {
    let because = error.map(|e| format!(": {e}")).unwrap_or_default();
    match status {
        RunStatus::Cancelled => format!("run {run_id} was cancelled{because}"),
        RunStatus::TimedOut => format!(
            "run {run_id} timed out{because}; see `flowgate events {run_id}`, resume it with \
             `flowgate retry {run_id}`"
        ),
        other => format!(
            "run {run_id} {other}{because}; see `flowgate status {run_id}` and `flowgate events \
             {run_id}`, resume it with `flowgate retry {run_id}`"
        ),
    }
}

impl CliError {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// How a command that got its answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The answer was printed and is a failure (an invalid definition): exit 1.
    Failure,
}

// ---------------------------------------------------------------------------------------------
// The API key
// ---------------------------------------------------------------------------------------------

/// Where the key sent to the API came from (for the hint after a 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--api-key` or `FLOWGATE_API_KEY`.
    Given,
    /// The key file of a local `flowgate serve`.
    File(PathBuf),
    /// None was found; the key file looked at, when there is a data directory.
    Missing { looked_at: Option<PathBuf> },
}

/// The key to send and where it came from. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub value: Option<String>,
    pub source: KeySource,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("source", &self.source)
            .finish()
    }
}

/// [`data_dir`] from this process's environment (where the API commands and `flowgate mcp`
/// look for the key a local `flowgate serve` wrote).
pub fn data_dir_from_env() -> Option<PathBuf> {
    data_dir(
        std::env::var_os("FLOWGATE_DATA_DIR"),
        std::env::var_os("HOME"),
    )
}

/// The data directory `flowgate serve` uses by default: `$FLOWGATE_DATA_DIR`, else
/// `$HOME/.flowgate`.
pub fn data_dir(flowgate_data_dir: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    flowgate_data_dir
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            home.filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".flowgate"))
        })
}

/// The key given (flag or environment), else the one in `<data_dir>/api-key`, else none (a
/// server without keys needs none; one with keys answers 401 and the hint says where we looked).
pub fn resolve_api_key(given: Option<&str>, data_dir: Option<&Path>) -> Result<ApiKey, CliError> {
    if let Some(key) = given.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok(ApiKey {
            value: Some(key.to_string()),
            source: KeySource::Given,
        });
    }
    let Some(dir) = data_dir else {
        return Ok(ApiKey {
            value: None,
            source: KeySource::Missing { looked_at: None },
        });
    };
    let path = dir.join(API_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(ApiKey {
            value: Some(text.trim().to_string()),
            source: KeySource::File(path),
        }),
        Ok(_) => Ok(ApiKey {
            value: None,
            source: KeySource::Missing {
                looked_at: Some(path),
            },
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ApiKey {
            value: None,
            source: KeySource::Missing {
                looked_at: Some(path),
            },
        }),
        Err(source) => Err(CliError::KeyFile { path, source }),
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

/// `KEY=VALUE`: VALUE as JSON when it parses, else as text.
pub fn parse_input(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE (e.g. --input topic=auth)"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!(
            "{text:?} has no key before `=` (e.g. --input topic=auth)"
        ));
    }
    let value =
        serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// A comma-separated list of run statuses, each checked.
pub fn parse_status_list(text: &str) -> Result<String, String> {
    let mut statuses = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        part.parse::<RunStatus>().map_err(|e| e.to_string())?;
        statuses.push(part);
    }
    if statuses.is_empty() {
        return Err("give at least one status, e.g. running,pending".to_string());
    }
    Ok(statuses.join(","))
}

/// The request `flowgate run` sends. Naming an input twice is a usage error (which one was
/// meant?).
pub fn start_request(args: &RunArgs) -> Result<StartRunRequest, CliError> {
    let mut inputs = Map::new();
    for (key, value) in &args.inputs {
        if inputs.insert(key.clone(), value.clone()).is_some() {
            return Err(CliError::Usage(format!(
                "--input {key} is given more than once; give each input once"
            )));
        }
    }
    Ok(StartRunRequest {
        workflow: args.workflow.clone(),
        inputs,
        message: args.message.clone(),
        max_turns: args.max_turns,
        session_name: args.session_name.clone(),
        continue_session: args.continue_session.clone(),
        repository_url: args.repository_url.clone(),
        git_branch: args.git_branch.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// Everything a command touches besides the API: output streams, whether stdout is a
/// terminal, the clock, how often `--wait` polls.
pub struct Context<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// stdout is a terminal: `run --wait` redraws its progress in place.
    pub tty: bool,
    pub now: &'a dyn Fn() -> Millis,
    pub poll_interval: Duration,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("tty", &self.tty)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// The binary's entry for API commands: resolves the key, runs the command, reports an error
/// on stderr, and answers the exit code (see [`EXIT_CODES_HELP`]).
pub fn main(options: &ApiOptions, command: ApiCommand) -> ExitCode {
    run_api_command(options, async |key, ctx| {
        execute(options, key, command, ctx).await
    })
}

/// What every API command's entry does around the command itself: resolve the key, build a
/// runtime, run `command` with stdout/stderr, report an error, answer the exit code.
pub(crate) fn run_api_command(
    options: &ApiOptions,
    command: impl AsyncFnOnce(&ApiKey, &mut Context<'_>) -> Result<Outcome, CliError>,
) -> ExitCode {
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let dir = data_dir_from_env();
    let key = match resolve_api_key(options.api_key.as_deref(), dir.as_deref()) {
        Ok(key) => key,
        Err(e) => {
            let _ = report_error(&e, None, &mut stderr);
            return ExitCode::from(e.exit_code());
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime);
    let result = runtime.and_then(|rt| {
        let tty = stdout.is_terminal();
        let mut ctx = Context {
            out: &mut stdout,
            err: &mut stderr,
            tty,
            now: &now_millis,
            poll_interval: WaitConfig::default().interval,
        };
        rt.block_on(command(&key, &mut ctx))
    });
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Err(e) => {
            let _ = report_error(&e, Some(&key), &mut stderr);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Writes `flowgate: <error>` and what helps next: every problem of a validation failure, and
/// after a 401 where the key came from.
pub fn report_error(error: &CliError, key: Option<&ApiKey>, err: &mut dyn Write) -> io::Result<()> {
    writeln!(err, "flowgate: {error}")?;
    if let CliError::Client(ClientError::Api {
        status, problems, ..
    }) = error
    {
        write_problems(err, problems)?;
        if *status == 401
            && let Some(key) = key
        {
            writeln!(err, "hint: {}", key_hint(&key.source))?;
        }
    }
    Ok(())
}

pub(crate) fn key_hint(source: &KeySource) -> String {
    match source {
        KeySource::Given => {
            "the key given with --api-key / FLOWGATE_API_KEY was refused; check it is a key this \
             server accepts"
                .to_string()
        }
        KeySource::File(path) => format!(
            "the key read from {} was refused (it belongs to another server?); pass the right one \
             with --api-key / FLOWGATE_API_KEY",
            path.display()
        ),
        KeySource::Missing {
            looked_at: Some(path),
        } => format!(
            "no API key was sent: none was given with --api-key / FLOWGATE_API_KEY and {} does \
             not exist; pass the key, or point FLOWGATE_DATA_DIR at the data directory of the \
             `flowgate serve` you are talking to",
            path.display()
        ),
        KeySource::Missing { looked_at: None } => {
            "no API key was sent: pass one with --api-key / FLOWGATE_API_KEY (HOME and \
             FLOWGATE_DATA_DIR are unset, so no key file was looked for)"
                .to_string()
        }
    }
}

fn write_problems(out: &mut dyn Write, problems: &[ProblemView]) -> io::Result<()> {
    for p in problems {
        let at = if p.path.is_empty() {
            "(document)"
        } else {
            &p.path
        };
        writeln!(out, "  {at}: {}", p.message)?;
    }
    Ok(())
}

/// Runs one API command against `options.url`.
pub async fn execute(
    options: &ApiOptions,
    key: &ApiKey,
    command: ApiCommand,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    let client = FlowgateClient::new(&options.url, key.value.clone())?;
    let json = options.json;
    match command {
        ApiCommand::Run(args) => run(&client, &args, json, ctx).await,
        ApiCommand::Status { run_id } => {
            let run = client.get_run(&run_id).await?;
            if json {
                print_json(ctx.out, &run)?;
            } else {
                write_run(ctx.out, &run, (ctx.now)())?;
            }
            Ok(Outcome::Success)
        }
        ApiCommand::Runs(args) => runs(&client, args, json, ctx).await,
        ApiCommand::Events {
            run_id,
            after,
            limit,
        } => events(&client, &run_id, after, limit, json, ctx).await,
        ApiCommand::Cancel {
            run_id,
            force,
            reason,
        } => {
            let answer = client
                .cancel_run(&run_id, &CancelRequest { force, reason })
                .await?;
            command_done(ctx, json, &answer, "cancel requested")
        }
        ApiCommand::Send {
            run_id,
            message,
            kind,
            step,
        } => {
            let request = MessageRequest {
                content: message,
                kind: kind.into(),
                step,
            };
            let answer = client.send_message(&run_id, &request).await?;
            command_done(ctx, json, &answer, "message sent")
        }
        ApiCommand::Retry { run_id, from_step } => {
            let answer = client
                .retry_run(&run_id, &RetryRequest { from_step })
                .await?;
            command_done(ctx, json, &answer, "retry started")
        }
        ApiCommand::Rollback { run_id, reason } => {
            let answer = client
                .rollback_run(&run_id, &RollbackRequest { reason })
                .await?;
            command_done(ctx, json, &answer, "rollback started")
        }
        ApiCommand::Workflows(command) => workflows(&client, command, json, ctx).await,
        ApiCommand::Sessions { name, active } => {
            sessions(&client, name.as_deref(), active, json, ctx).await
        }
        ApiCommand::AgentWorkflows => {
            let list = client.list_agent_workflows().await?;
            if json {
                print_json(ctx.out, &list)?;
                return Ok(Outcome::Success);
            }
            let mut table = Table::new(&["NAME", "MAX TURNS", "DESCRIPTION"]);
            for w in &list.workflows {
                table.row(vec![
                    w.name.clone(),
                    w.max_turns.map(|t| t.to_string()).unwrap_or_default(),
                    clip(
                        w.description
                            .as_deref()
                            .or(w.display_name.as_deref())
                            .unwrap_or(""),
                        80,
                    ),
                ]);
            }
            table.write(ctx.out, "")?;
            Ok(Outcome::Success)
        }
    }
}

async fn run(
    client: &FlowgateClient,
    args: &RunArgs,
    json: bool,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    let request = start_request(args)?;
    let started = client
        .start_run(&request, args.idempotency_key.as_deref())
        .await?;
    let id = &started.run_id;
    if !args.wait {
        if json {
            print_json(ctx.out, &started)?;
        } else if started.existing {
            writeln!(
                ctx.out,
                "run {id} (workflow {} v{}) was already started with this idempotency key; \
                 nothing new was started",
                started.workflow_id, started.workflow_version
            )?;
        } else {
            writeln!(
                ctx.out,
                "started run {id} (workflow {} v{})\nfollow it with `flowgate status {id}`",
                started.workflow_id, started.workflow_version
            )?;
        }
        return Ok(Outcome::Success);
    }
    if !json {
        let verb = if started.existing {
            "following the run already started with this idempotency key:"
        } else {
            "started"
        };
        writeln!(
            ctx.out,
            "{verb} run {id} (workflow {} v{})",
            started.workflow_id, started.workflow_version
        )?;
    }
    let config = WaitConfig {
        interval: ctx.poll_interval,
        timeout: args.timeout,
        ..WaitConfig::default()
    };
    let mut display = Progress::new(ctx.tty);
    let run = progress::wait_for_run(
        client,
        id,
        &config,
        (!json).then_some(&mut display),
        ctx.out,
        ctx.err,
        ctx.now,
    )
    .await?;
    if json {
        print_json(ctx.out, &run)?;
    } else {
        writeln!(ctx.out, "{}", progress::summary(&run, (ctx.now)()))?;
    }
    finished(&run)
}

/// Success when the run succeeded, else the error naming how it ended.
fn finished(run: &RunDetail) -> Result<Outcome, CliError> {
    if run.summary.status == RunStatus::Succeeded {
        Ok(Outcome::Success)
    } else {
        Err(CliError::RunNotSucceeded {
            run_id: run.summary.id.clone(),
            status: run.summary.status,
            error: run.summary.error.clone(),
        })
    }
}

fn command_done(
    ctx: &mut Context<'_>,
    json: bool,
    answer: &flowgate_shared::api::CommandResponse,
    what: &str,
) -> Result<Outcome, CliError> {
    if json {
        print_json(ctx.out, answer)?;
    } else {
        writeln!(
            ctx.out,
            "{what}: run {} is {} (follow it with `flowgate status {}`)",
            answer.run_id, answer.status, answer.run_id
        )?;
    }
    Ok(Outcome::Success)
}

/// `flowgate status`: the run, its steps, what waits for a person.
pub fn write_run(out: &mut dyn Write, run: &RunDetail, now: Millis) -> io::Result<()> {
    let s = &run.summary;
    writeln!(out, "{}", progress::header(run, now))?;
    let mut facts = Table::headless();
    let mut created = time(s.created_at);
    if let Some(by) = &s.started_by {
        created.push_str(&format!(" by {by}"));
    }
    facts.row(vec!["created".into(), created]);
    if let Some(at) = s.started_at {
        facts.row(vec!["started".into(), time(at)]);
    }
    if let Some(at) = s.completed_at {
        facts.row(vec!["completed".into(), time(at)]);
    }
    if let Some(session) = &run.session_name {
        facts.row(vec!["session".into(), session.clone()]);
    }
    if let Some(max) = run.max_turns {
        facts.row(vec!["max turns".into(), max.to_string()]);
    }
    if let Some(parent) = &run.parent_run_id {
        facts.row(vec!["parent run".into(), parent.clone()]);
    }
    if !run.inputs.is_empty() {
        facts.row(vec!["inputs".into(), compact(&run.inputs)]);
    }
    if !run.outputs.is_empty() {
        facts.row(vec!["outputs".into(), clip(&compact(&run.outputs), 200)]);
    }
    if let Some(error) = &s.error {
        facts.row(vec!["error".into(), error.clone()]);
    }
    facts.write(out, "  ")?;
    writeln!(out)?;

    let mut steps = Table::new(&[
        "", "STEP", "KIND", "STATUS", "PROGRESS", "COST", "TIME", "ERROR",
    ]);
    for step in &run.steps {
        steps.row(progress::step_cells(step, now));
    }
    steps.write(out, "")?;

    if !run.open_approvals.is_empty() {
        writeln!(out, "\nwaiting for approval:")?;
        for a in &run.open_approvals {
            let mut line = format!(
                "  {} (step {}): {:?}, needs {} of {}",
                a.id,
                a.step,
                a.message,
                a.required,
                a.approvers.join(", ")
            );
            if let Some(expires) = a.expires_at {
                line.push_str(&format!(", expires {}", time(expires)));
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn compact(map: &Map<String, Value>) -> String {
    serde_json::to_string(map).unwrap_or_default()
}

async fn runs(
    client: &FlowgateClient,
    args: RunsArgs,
    json: bool,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    let params = ListRunsParams {
        workflow: args.workflow,
        status: args.status,
        from: None,
        to: None,
        sort: args.sort,
        order: args.order,
        limit: args.limit,
        cursor: args.cursor,
    };
    let list = client.list_runs(&params).await?;
    if json {
        print_json(ctx.out, &list)?;
        return Ok(Outcome::Success);
    }
    if list.runs.is_empty() {
        writeln!(ctx.out, "no runs")?;
    } else {
        let mut table = Table::new(&[
            "ID", "WORKFLOW", "STATUS", "CREATED", "DURATION", "COST", "ERROR",
        ]);
        for r in &list.runs {
            table.row(vec![
                r.id.clone(),
                format!("{} v{}", r.workflow_id, r.workflow_version),
                r.status.to_string(),
                time(r.created_at),
                r.duration_ms.map(duration).unwrap_or_default(),
                cost(r.cost_usd),
                r.error.as_deref().map(|e| clip(e, 50)).unwrap_or_default(),
            ]);
        }
        table.write(ctx.out, "")?;
    }
    if let Some(cursor) = &list.next_cursor {
        writeln!(
            ctx.out,
            "more: add --cursor {cursor} (with the same filters)"
        )?;
    }
    Ok(Outcome::Success)
}

/// Upper bound on pages `flowgate events` reads, so a server that keeps answering a
/// `next_after` cannot keep it going forever.
const MAX_EVENT_PAGES: usize = 1000;

async fn events(
    client: &FlowgateClient,
    run_id: &str,
    after: Option<u64>,
    limit: Option<u32>,
    json: bool,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    let mut page = client.run_events(run_id, after, limit).await?;
    if limit.is_none() {
        // The whole log: follow `next_after` while it moves forward.
        let mut cursor = after;
        for _ in 1..MAX_EVENT_PAGES {
            match page.next_after {
                Some(next) if Some(next) > cursor => {
                    cursor = Some(next);
                    let more = client.run_events(run_id, cursor, None).await?;
                    page.events.extend(more.events);
                    page.next_after = more.next_after;
                }
                _ => break,
            }
        }
        page.next_after = None;
    }
    if json {
        print_json(ctx.out, &page)?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["SEQ", "AT", "ACTOR", "KIND", "STEP", "MESSAGE"]);
    for e in &page.events {
        let step = match (&e.step_id, e.attempt) {
            (Some(step), Some(attempt)) => format!("{step}#{attempt}"),
            (Some(step), None) => step.clone(),
            _ => String::new(),
        };
        table.row(vec![
            e.seq.to_string(),
            time(e.at),
            e.actor.clone(),
            e.kind.clone(),
            step,
            e.message.clone(),
        ]);
    }
    table.write(ctx.out, "")?;
    if let Some(next) = page.next_after {
        writeln!(ctx.out, "more: add --after {next}")?;
    }
    Ok(Outcome::Success)
}

async fn workflows(
    client: &FlowgateClient,
    command: WorkflowsCommand,
    json: bool,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    match command {
        WorkflowsCommand::List => {
            let list = client.list_workflows().await?;
            if json {
                print_json(ctx.out, &list)?;
                return Ok(Outcome::Success);
            }
            if list.workflows.is_empty() {
                writeln!(
                    ctx.out,
                    "no stored workflows (store one with `flowgate workflows put <file>`)"
                )?;
                return Ok(Outcome::Success);
            }
            let mut table = Table::new(&["ID", "VERSION", "STEPS", "CREATED", "NAME"]);
            for w in &list.workflows {
                table.row(vec![
                    w.id.clone(),
                    w.version.to_string(),
                    w.steps.to_string(),
                    time(w.created_at),
                    w.name.clone().unwrap_or_default(),
                ]);
            }
            table.write(ctx.out, "")?;
        }
        WorkflowsCommand::Get { id, version } => {
            let detail = client.get_workflow(&id, version).await?;
            if json {
                print_json(ctx.out, &detail)?;
                return Ok(Outcome::Success);
            }
            // A YAML comment, so the output is a definition file `workflows put` takes back.
            writeln!(
                ctx.out,
                "# workflow {}, version {}, stored {}",
                detail.id,
                detail.version,
                time(detail.created_at)
            )?;
            let yaml = serde_norway::to_string(&detail.definition).map_err(io::Error::other)?;
            write!(ctx.out, "{yaml}")?;
        }
        WorkflowsCommand::Put { file } => {
            let text = read_file(&file)?;
            let definition = match parse_definition(&text) {
                Ok(definition) => definition,
                Err(errors) => {
                    let problems: Vec<ProblemView> = errors
                        .0
                        .into_iter()
                        .map(|p| ProblemView {
                            path: p.path,
                            message: p.message,
                        })
                        .collect();
                    writeln!(ctx.err, "{}: {} problem(s)", file.display(), problems.len())?;
                    write_problems(ctx.err, &problems)?;
                    return Err(CliError::InvalidDefinition {
                        path: file,
                        count: problems.len(),
                    });
                }
            };
            let stored = client.put_workflow(&definition.id, &text).await?;
            if json {
                print_json(ctx.out, &stored.workflow)?;
            } else {
                let what = if stored.created {
                    "a new workflow"
                } else {
                    "a new version"
                };
                writeln!(
                    ctx.out,
                    "stored workflow {} version {} ({what})",
                    stored.workflow.id, stored.workflow.version
                )?;
            }
        }
        WorkflowsCommand::Delete { id } => {
            client.delete_workflow(&id).await?;
            if !json {
                writeln!(ctx.out, "deleted workflow {id}")?;
            }
        }
        WorkflowsCommand::Validate { file, strict } => {
            let text = read_file(&file)?;
            let report = client.validate_workflow(&text, strict).await?;
            if json {
                print_json(ctx.out, &report)?;
            } else if report.valid {
                let checked = if report.strict {
                    " (agent workflow names checked)"
                } else {
                    ""
                };
                writeln!(ctx.out, "{}: valid{checked}", file.display())?;
            } else {
                writeln!(
                    ctx.out,
                    "{}: {} problem(s)",
                    file.display(),
                    report.problems.len()
                )?;
                write_problems(ctx.out, &report.problems)?;
            }
            if !report.valid {
                return Ok(Outcome::Failure);
            }
        }
    }
    Ok(Outcome::Success)
}

fn read_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

async fn sessions(
    client: &FlowgateClient,
    name: Option<&str>,
    active: bool,
    json: bool,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    if let Some(name) = name {
        let session = client.get_session(name).await?;
        if json {
            print_json(ctx.out, &session)?;
            return Ok(Outcome::Success);
        }
        let state = if session.active { "active" } else { "idle" };
        writeln!(ctx.out, "session {} ({state})", session.name)?;
        let mut facts = Table::headless();
        if let Some(id) = &session.agent_session_id {
            facts.row(vec!["agent session".into(), id.clone()]);
        }
        facts.row(vec!["created".into(), time(session.created_at)]);
        facts.row(vec!["updated".into(), time(session.updated_at)]);
        facts.write(ctx.out, "  ")?;
        if !session.runs.is_empty() {
            writeln!(ctx.out)?;
            let mut table = Table::new(&["RUN", "STEP", "AT"]);
            for r in &session.runs {
                table.row(vec![r.run_id.clone(), r.step_id.clone(), time(r.at)]);
            }
            table.write(ctx.out, "")?;
        }
        return Ok(Outcome::Success);
    }
    let list = client.list_sessions(active.then_some(true)).await?;
    if json {
        print_json(ctx.out, &list)?;
        return Ok(Outcome::Success);
    }
    if list.sessions.is_empty() {
        writeln!(ctx.out, "no sessions")?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["NAME", "ACTIVE", "RUNS", "UPDATED", "LAST RUN"]);
    for s in &list.sessions {
        let runs: BTreeSet<&str> = s.runs.iter().map(|r| r.run_id.as_str()).collect();
        table.row(vec![
            s.name.clone(),
            if s.active { "yes" } else { "no" }.to_string(),
            runs.len().to_string(),
            time(s.updated_at),
            s.runs.last().map(|r| r.run_id.clone()).unwrap_or_default(),
        ]);
    }
    table.write(ctx.out, "")?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("flowgate").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} parses: {e}"))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let cli = parse(&["--json", "--url", "http://h:1", "runs", "--limit", "5"]);
        assert!(cli.api.json);
        assert_eq!(cli.api.url, "http://h:1");
        let cli = parse(&["workflows", "list", "--json", "--api-key", "k"]);
        assert!(cli.api.json);
        assert_eq!(cli.api.api_key.as_deref(), Some("k"));
        assert!(!format!("{cli:?}").contains("\"k\""), "Debug hides the key");
        assert!(matches!(
            cli.command,
            Command::Api(ApiCommand::Workflows(WorkflowsCommand::List))
        ));
    }

    #[test]
    fn the_other_commands_keep_their_own_flags() {
        let cli = parse(&["simulate-agent", "--api-key", "sim"]);
        let Command::SimulateAgent { api_key, .. } = cli.command else {
            panic!("simulate-agent");
        };
        assert_eq!(api_key, "sim");
        let cli = parse(&["validate", "--json", "a.yaml"]);
        assert!(matches!(cli.command, Command::Validate { json: true, .. }));
        let cli = parse(&["serve", "--api-key", "server-key"]);
        let Command::Serve(args) = cli.command else {
            panic!("serve");
        };
        assert_eq!(args.api_key.as_deref(), Some("server-key"));
    }

    #[test]
    fn run_takes_every_option() {
        let cli = parse(&[
            "run",
            "feature",
            "--input",
            "topic=auth service",
            "-i",
            "n=3",
            "-i",
            "opts={\"deep\": true}",
            "-i",
            "quoted=\"5\"",
            "--message",
            "go",
            "--max-turns",
            "20",
            "--session-name",
            "s1",
            "--continue-session",
            "s0",
            "--repo",
            "https://github.com/acme/app",
            "--branch",
            "main",
            "--idempotency-key",
            "k1",
            "--wait",
            "--timeout",
            "10m",
        ]);
        let Command::Api(ApiCommand::Run(args)) = cli.command else {
            panic!("run");
        };
        assert_eq!(args.timeout, Some(Duration::from_secs(600)));
        assert!(args.wait);
        let request = start_request(&args).expect("valid");
        assert_eq!(
            serde_json::to_value(&request).expect("json"),
            json!({
                "workflow": "feature",
                "inputs": {"topic": "auth service", "n": 3, "opts": {"deep": true}, "quoted": "5"},
                "message": "go", "max_turns": 20, "session_name": "s1", "continue_session": "s0",
                "repository_url": "https://github.com/acme/app", "git_branch": "main"
            })
        );
    }

    #[test]
    fn usage_errors_are_refused_by_clap() {
        for args in [
            &["run", "w", "--timeout", "5m"][..],
            &["run", "w", "--input", "novalue"],
            &["run", "w", "--input", "=v"],
            &["run", "w", "--max-turns", "0"],
            &["runs", "--status", "done"],
            &["runs", "--sort", "name"],
            &["runs", "--limit", "101"],
            &["send", "r-1", "hi", "--type", "robot"],
            &["sessions", "s1", "--active"],
            &["workflows"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("flowgate").chain(args.iter().copied()))
                .expect_err("usage error");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn input_values_are_json_when_they_parse() {
        assert_eq!(parse_input("n=3"), Ok(("n".into(), json!(3))));
        assert_eq!(parse_input("ok=true"), Ok(("ok".into(), json!(true))));
        assert_eq!(parse_input("l=[1,2]"), Ok(("l".into(), json!([1, 2]))));
        assert_eq!(parse_input("s=hello"), Ok(("s".into(), json!("hello"))));
        assert_eq!(parse_input("s=a=b"), Ok(("s".into(), json!("a=b"))));
        assert_eq!(
            parse_input("s=3 apples"),
            Ok(("s".into(), json!("3 apples")))
        );
        assert_eq!(parse_input("e="), Ok(("e".into(), json!(""))));
        assert!(parse_input("novalue").is_err());
        assert!(parse_input(" =x").is_err());
    }

    #[test]
    fn an_input_given_twice_is_a_usage_error() {
        let args = RunArgs {
            workflow: "w".into(),
            inputs: vec![("a".into(), json!(1)), ("a".into(), json!(2))],
            message: None,
            max_turns: None,
            session_name: None,
            continue_session: None,
            repository_url: None,
            git_branch: None,
            idempotency_key: None,
            wait: false,
            timeout: None,
        };
        let err = start_request(&args).expect_err("twice");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--input a"), "{err}");
    }

    #[test]
    fn statuses_are_checked() {
        assert_eq!(
            parse_status_list("running, pending"),
            Ok("running,pending".into())
        );
        let err = parse_status_list("running,done").expect_err("unknown");
        assert!(err.contains("\"done\""), "{err}");
        assert!(parse_status_list(",").is_err());
    }

    #[test]
    fn the_key_comes_from_the_option_else_the_serve_key_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = resolve_api_key(Some(" given "), Some(dir.path())).expect("key");
        assert_eq!(key.value.as_deref(), Some("given"));
        assert_eq!(key.source, KeySource::Given);
        assert!(!format!("{key:?}").contains("given\""));

        let missing = resolve_api_key(None, Some(dir.path())).expect("no key");
        assert_eq!(missing.value, None);
        assert_eq!(
            missing.source,
            KeySource::Missing {
                looked_at: Some(dir.path().join("api-key"))
            }
        );

        std::fs::write(dir.path().join("api-key"), "file-key\n").expect("write");
        let from_file = resolve_api_key(Some(""), Some(dir.path())).expect("key");
        assert_eq!(from_file.value.as_deref(), Some("file-key"));
        assert_eq!(
            from_file.source,
            KeySource::File(dir.path().join("api-key"))
        );

        assert_eq!(
            resolve_api_key(None, None).expect("none").source,
            KeySource::Missing { looked_at: None }
        );
    }

    #[test]
    fn the_data_dir_is_the_env_var_else_home() {
        assert_eq!(
            data_dir(Some("/d".into()), Some("/home/u".into())),
            Some(PathBuf::from("/d"))
        );
        assert_eq!(
            data_dir(Some("".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.flowgate"))
        );
        assert_eq!(data_dir(None, None), None);
    }
}
