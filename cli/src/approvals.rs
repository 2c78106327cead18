//! The commands for people in the loop: list approvals and decide on them, and manage the
//! outbound webhook subscriptions that tell other systems what runs do.
//!
//! They work like the commands in [`crate::commands`] (same global `--url`, `--api-key` and
//! `--json`, same error report and exit codes) and reuse its key resolution and [`Context`];
//! they live apart so the run commands stay readable.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use flowgate_shared::api::client::{ApprovalFilter, FlowgateClient, ListApprovalsParams};
use flowgate_shared::api::{
    ApprovalView, AttemptResult, CreateWebhookRequest, DecisionRequest, DecisionResponse,
    Subscription,
};
use flowgate_shared::model::{ApprovalDecision, ApprovalStatus};

use crate::commands::{ApiKey, ApiOptions, CliError, Context, Outcome};
use crate::output::{Table, clip, duration, print_json, time};

/// The approval and webhook commands.
#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// List approvals, newest request first: the pending ones unless --status says otherwise.
    Approvals(ApprovalsArgs),
    /// Decide on an approval, as the holder of the API key.
    #[command(after_help = crate::commands::EXIT_CODES_HELP)]
    Decide(DecideArgs),
    /// Manage webhook subscriptions: where Flowgate POSTs run lifecycle events.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

/// `flowgate approvals`.
#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    /// Only approvals in this state, or `all` (default: pending).
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Only approvals of this workflow's runs.
    #[arg(long)]
    pub workflow: Option<String>,
    /// At most this many (1-100; the API's default is 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
}

/// `--status` of `flowgate approvals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    Retried,
    Skipped,
    All,
}

impl From<StatusArg> for ApprovalFilter {
    fn from(status: StatusArg) -> Self {
        let only = |s| ApprovalFilter::Status(s);
        match status {
            StatusArg::Pending => only(ApprovalStatus::Pending),
            StatusArg::Approved => only(ApprovalStatus::Approved),
            StatusArg::Rejected => only(ApprovalStatus::Rejected),
            StatusArg::Expired => only(ApprovalStatus::Expired),
            StatusArg::Cancelled => only(ApprovalStatus::Cancelled),
            StatusArg::Retried => only(ApprovalStatus::Retried),
            StatusArg::Skipped => only(ApprovalStatus::Skipped),
            StatusArg::All => ApprovalFilter::All,
        }
    }
}

/// `flowgate decide`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval's id (`<run>.<step>.<attempt>`, as `flowgate approvals` lists it).
    pub approval_id: String,
    /// approve; reject (fails the step); retry (runs the agent step before the gate again with
    /// --comment as feedback); skip (the gate and what depends on it); cancel (the whole run).
    #[arg(value_enum)]
    pub decision: DecisionArg,
    /// Why (reject), feedback for the agent (retry: required), or a note for the audit log.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

/// The decision of `flowgate decide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecisionArg {
    Approve,
    Reject,
    Retry,
    Skip,
    Cancel,
}

impl From<DecisionArg> for ApprovalDecision {
    fn from(d: DecisionArg) -> Self {
        match d {
            DecisionArg::Approve => ApprovalDecision::Approve,
            DecisionArg::Reject => ApprovalDecision::Reject,
            DecisionArg::Retry => ApprovalDecision::Retry,
            DecisionArg::Skip => ApprovalDecision::Skip,
            DecisionArg::Cancel => ApprovalDecision::Cancel,
        }
    }
}

/// `flowgate webhooks ...`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List webhook subscriptions (oldest first; secrets are never shown).
    List,
    /// Subscribe a URL to run lifecycle events. Prints the signing secret: it is shown only
    /// this once.
    Create(CreateWebhookArgs),
    /// Show one subscription.
    Get {
        /// The subscription's id (`wh_...`).
        id: String,
    },
    /// Unsubscribe (deliveries already queued are dropped unsent).
    Delete {
        /// The subscription's id (`wh_...`).
        id: String,
    },
    /// Show a subscription's delivery attempts, newest first (kept 30 days).
    Deliveries {
        /// The subscription's id (`wh_...`).
        id: String,
        /// At most this many attempts (1-100; the API's default is 20).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: Option<u32>,
    },
}

/// `flowgate webhooks create`.
///
/// The receiver's address is the positional `ENDPOINT` (also accepted as `--endpoint`): the
/// global `--url` already names the Flowgate API, and one flag cannot mean both.
#[derive(Debug, Args)]
pub struct CreateWebhookArgs {
    /// Where deliveries are POSTed (absolute https or http URL; redirects are not followed).
    #[arg(value_name = "ENDPOINT", required_unless_present = "endpoint_flag")]
    pub endpoint: Option<String>,
    /// The same as the positional ENDPOINT.
    #[arg(
        long = "endpoint",
        id = "endpoint_flag",
        value_name = "ENDPOINT",
        conflicts_with = "endpoint"
    )]
    pub endpoint_flag: Option<String>,
    /// Events to deliver, comma-separated: run.started, step.completed, step.failed,
    /// approval.requested, approval.decided, run.completed, run.failed, run.cancelled, or `*`
    /// for all.
    #[arg(
        long,
        required = true,
        value_delimiter = ',',
        value_name = "EVENT[,EVENT...]"
    )]
    pub events: Vec<String>,
    /// Only runs of this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// A note on what the subscription is for.
    #[arg(long)]
    pub description: Option<String>,
    /// Sign with this Standard Webhooks secret (`whsec_` + base64) instead of a generated one.
    /// The environment variable keeps it out of shell history.
    #[arg(
        long,
        env = "FLOWGATE_WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "whsec_..."
    )]
    pub secret: Option<String>,
}

impl CreateWebhookArgs {
    /// The request `flowgate webhooks create` sends. Events are trimmed and blanks dropped
    /// (`a, b,` is `a,b`); an empty list is a usage error rather than a 422.
    pub fn request(&self) -> Result<CreateWebhookRequest, CliError> {
        let url = self
            .endpoint
            .as_ref()
            .or(self.endpoint_flag.as_ref())
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                CliError::Usage(
                    "give the address deliveries go to, e.g. `flowgate webhooks create \
                     https://hooks.example.com/flowgate --events run.completed`"
                        .into(),
                )
            })?;
        let events: Vec<String> = self
            .events
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if events.is_empty() {
            return Err(CliError::Usage(
                "--events names no event; give at least one, e.g. --events \
                 run.completed,step.failed (or `*` for all)"
                    .into(),
            ));
        }
        Ok(CreateWebhookRequest {
            url,
            events,
            secret: self.secret.clone().filter(|s| !s.trim().is_empty()),
            description: self.description.clone(),
            workflow: self.workflow.clone(),
        })
    }
}

/// The request `flowgate decide` sends. `retry` needs feedback (the agent is told what to
/// change), so a retry without a non-blank comment is refused here, before anything is sent.
pub fn decision_request(args: &DecideArgs) -> Result<DecisionRequest, CliError> {
    let comment = args.comment.clone().filter(|c| !c.trim().is_empty());
    if args.decision == DecisionArg::Retry && comment.is_none() {
        return Err(CliError::Usage(format!(
            "retry needs feedback for the agent: add --comment \"what to change\" (nothing was \
             sent; approval {} is unchanged)",
            args.approval_id
        )));
    }
    Ok(DecisionRequest {
        decision: args.decision.into(),
        comment,
    })
}

// ---------------------------------------------------------------------------------------------
// Running the commands
// ---------------------------------------------------------------------------------------------

/// The binary's entry for these commands: the same key resolution, error report and exit codes
/// as [`crate::commands::main`].
pub fn main(options: &ApiOptions, command: ApprovalCommand) -> ExitCode {
    crate::commands::run_api_command(options, async |key, ctx| {
        execute(options, key, command, ctx).await
    })
}

/// Runs one approval or webhook command against `options.url`.
pub async fn execute(
    options: &ApiOptions,
    key: &ApiKey,
    command: ApprovalCommand,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    let client = FlowgateClient::new(&options.url, key.value.clone())?;
    let json = options.json;
    match command {
        ApprovalCommand::Approvals(args) => approvals(&client, args, json, ctx).await,
        ApprovalCommand::Decide(args) => {
            // Checked before sending: a retry without feedback cannot succeed.
            let request = decision_request(&args)?;
            let answer = client.decide_approval(&args.approval_id, &request).await?;
            if json {
                print_json(ctx.out, &answer)?;
            } else {
                writeln!(ctx.out, "{}", decided(&answer, request.decision))?;
            }
            Ok(Outcome::Success)
        }
        ApprovalCommand::Webhooks(command) => webhooks(&client, command, json, ctx).await,
    }
}

async fn approvals(
    client: &FlowgateClient,
    args: ApprovalsArgs,
    json: bool,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    let filter = args.status.map(ApprovalFilter::from);
    let params = ListApprovalsParams {
        status: filter,
        workflow: args.workflow,
        limit: args.limit,
    };
    let list = client.list_approvals(&params).await?;
    if json {
        print_json(ctx.out, &list)?;
        return Ok(Outcome::Success);
    }
    if list.approvals.is_empty() {
        let which = match filter {
            None => "pending approvals".to_string(),
            Some(ApprovalFilter::All) => "approvals".to_string(),
            Some(ApprovalFilter::Status(s)) => format!("{s} approvals"),
        };
        let of = params
            .workflow
            .as_deref()
            .map(|w| format!(" of workflow {w}"))
            .unwrap_or_default();
        writeln!(ctx.out, "no {which}{of}")?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&[
        "ID",
        "RUN",
        "STEP",
        "KIND",
        "STATUS",
        "APPROVERS",
        "REQUESTED",
        "EXPIRES",
    ]);
    for a in &list.approvals {
        table.row(approval_cells(a));
    }
    table.write(ctx.out, "")?;
    if list
        .approvals
        .iter()
        .any(|a| a.status == ApprovalStatus::Pending)
    {
        writeln!(
            ctx.out,
            "decide with `flowgate decide <id> approve|reject|retry|skip|cancel [--comment TEXT]`"
        )?;
    }
    Ok(Outcome::Success)
}

/// One row of `flowgate approvals`.
fn approval_cells(a: &ApprovalView) -> Vec<String> {
    vec![
        a.id.clone(),
        a.run_id.clone(),
        // A budget gate of the whole run has no step.
        if a.step.is_empty() {
            "(run)".to_string()
        } else {
            a.step.clone()
        },
        a.kind.to_string(),
        a.status.to_string(),
        approvers(a),
        time(a.requested_at),
        a.expires_at.map(time).unwrap_or_default(),
    ]
}

/// `alice, bob`, `2 of alice, bob, carol`, or `anyone` (no approvers listed: anyone with
/// access may decide).
fn approvers(a: &ApprovalView) -> String {
    if a.approvers.is_empty() {
        return "anyone".to_string();
    }
    let list = clip(&a.approvers.join(", "), 40);
    if a.required > 1 {
        format!("{} of {list}", a.required)
    } else {
        list
    }
}

/// What `flowgate decide` prints: what was recorded, for whom, and where the approval and the
/// run stand now.
pub fn decided(answer: &DecisionResponse, decision: ApprovalDecision) -> String {
    let a = &answer.approval;
    let mut line = format!(
        "{decision} recorded by {}: approval {} is {}",
        answer.by, a.id, a.status
    );
    if a.status == ApprovalStatus::Pending && decision == ApprovalDecision::Approve {
        let approved = a
            .decisions
            .iter()
            .filter(|d| d.decision == ApprovalDecision::Approve)
            .count();
        let missing = usize::try_from(a.required)
            .unwrap_or(usize::MAX)
            .saturating_sub(approved);
        if missing > 0 {
            line.push_str(&format!(" (waiting for {missing} more approval(s))"));
        }
    }
    line.push_str(&format!(
        ", run {} is {} (follow it with `flowgate status {}`)",
        a.run_id, answer.run_status, a.run_id
    ));
    line
}

async fn webhooks(
    client: &FlowgateClient,
    command: WebhooksCommand,
    json: bool,
    ctx: &mut Context<'_>,
) -> Result<Outcome, CliError> {
    match command {
        WebhooksCommand::List => {
            let list = client.list_webhooks().await?;
            if json {
                print_json(ctx.out, &list)?;
                return Ok(Outcome::Success);
            }
            if list.webhooks.is_empty() {
                writeln!(
                    ctx.out,
                    "no webhook subscriptions (add one with `flowgate webhooks create <ENDPOINT> \
                     --events run.completed`)"
                )?;
                return Ok(Outcome::Success);
            }
            let mut table = Table::new(&[
                "ID",
                "ENDPOINT",
                "EVENTS",
                "WORKFLOW",
                "ENABLED",
                "CREATED",
                "DESCRIPTION",
            ]);
            for w in &list.webhooks {
                table.row(vec![
                    w.id.clone(),
                    w.url.clone(),
                    w.events.join(","),
                    w.workflow.clone().unwrap_or_else(|| "(all)".to_string()),
                    if w.enabled { "yes" } else { "no" }.to_string(),
                    time(w.created_at),
                    clip(w.description.as_deref().unwrap_or(""), 50),
                ]);
            }
            table.write(ctx.out, "")?;
        }
        WebhooksCommand::Create(args) => {
            let request = args.request()?;
            let created = client.create_webhook(&request).await?;
            if json {
                print_json(ctx.out, &created)?;
                return Ok(Outcome::Success);
            }
            let w = &created.webhook;
            writeln!(
                ctx.out,
                "created webhook {} -> {} (events: {})",
                w.id,
                w.url,
                w.events.join(", ")
            )?;
            writeln!(ctx.out, "secret: {}", created.secret)?;
            writeln!(
                ctx.out,
                "store the secret now: it is shown only this once (deliveries are signed with \
                 it per Standard Webhooks; verify the webhook-signature header). Lost it? Delete \
                 the subscription and create it again."
            )?;
        }
        WebhooksCommand::Get { id } => {
            let w = client.get_webhook(&id).await?;
            if json {
                print_json(ctx.out, &w)?;
            } else {
                write_webhook(ctx.out, &w)?;
            }
        }
        WebhooksCommand::Delete { id } => {
            client.delete_webhook(&id).await?;
            if !json {
                writeln!(ctx.out, "deleted webhook {id}")?;
            }
        }
        WebhooksCommand::Deliveries { id, limit } => {
            let list = client.webhook_deliveries(&id, limit).await?;
            if json {
                print_json(ctx.out, &list)?;
                return Ok(Outcome::Success);
            }
            if list.deliveries.is_empty() {
                writeln!(ctx.out, "no delivery attempts for {id} in the last 30 days")?;
                return Ok(Outcome::Success);
            }
            let mut table = Table::new(&[
                "AT",
                "EVENT",
                "MESSAGE",
                "ATTEMPT",
                "RESULT",
                "HTTP",
                "TOOK",
                "NEXT RETRY",
                "ERROR",
            ]);
            for d in &list.deliveries {
                table.row(vec![
                    time(d.at),
                    d.event.clone(),
                    d.message_id.clone(),
                    d.attempt.to_string(),
                    attempt_result(d.result).to_string(),
                    d.status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    duration(i64::try_from(d.duration_ms).unwrap_or(i64::MAX)),
                    d.next_retry_at.map(time).unwrap_or_else(|| "-".into()),
                    d.error.as_deref().map(|e| clip(e, 60)).unwrap_or_default(),
                ]);
            }
            table.write(ctx.out, "")?;
        }
    }
    Ok(Outcome::Success)
}

/// `flowgate webhooks get`.
fn write_webhook(out: &mut dyn Write, w: &Subscription) -> io::Result<()> {
    let state = if w.enabled { "enabled" } else { "disabled" };
    writeln!(out, "webhook {} ({state})", w.id)?;
    let mut facts = Table::headless();
    facts.row(vec!["endpoint".into(), w.url.clone()]);
    facts.row(vec!["events".into(), w.events.join(", ")]);
    facts.row(vec![
        "workflow".into(),
        w.workflow.clone().unwrap_or_else(|| "(all)".to_string()),
    ]);
    if let Some(description) = &w.description {
        facts.row(vec!["description".into(), description.clone()]);
    }
    facts.row(vec!["created".into(), time(w.created_at)]);
    if let Some(reason) = &w.disabled_reason {
        facts.row(vec!["disabled".into(), reason.clone()]);
    }
    facts.write(out, "  ")?;
    writeln!(
        out,
        "see its deliveries with `flowgate webhooks deliveries {}`",
        w.id
    )
}

/// The API's name of an attempt's result (`gave_up`, ...).
fn attempt_result(result: AttemptResult) -> &'static str {
    match result {
        AttemptResult::Delivered => "delivered",
        AttemptResult::Retrying => "retrying",
        AttemptResult::GaveUp => "gave_up",
        AttemptResult::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(decision: DecisionArg, comment: Option<&str>) -> DecideArgs {
        DecideArgs {
            approval_id: "r-1.review.1".into(),
            decision,
            comment: comment.map(str::to_string),
        }
    }

    #[test]
    fn retry_needs_a_comment_and_blank_comments_are_dropped() {
        let err = decision_request(&decide(DecisionArg::Retry, None)).expect_err("no feedback");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--comment"), "{err}");
        assert!(decision_request(&decide(DecisionArg::Retry, Some("  "))).is_err());
        let ok = decision_request(&decide(DecisionArg::Retry, Some("add tests"))).expect("ok");
        assert_eq!(ok.decision, ApprovalDecision::Retry);
        assert_eq!(ok.comment.as_deref(), Some("add tests"));
        let approve = decision_request(&decide(DecisionArg::Approve, Some(" "))).expect("ok");
        assert_eq!(approve.comment, None);
    }

    #[test]
    fn status_arguments_map_to_the_api_names() {
        for (arg, text) in [
            (StatusArg::Pending, "pending"),
            (StatusArg::Skipped, "skipped"),
            (StatusArg::Retried, "retried"),
            (StatusArg::All, "all"),
        ] {
            assert_eq!(ApprovalFilter::from(arg).as_str(), text);
        }
        for d in DecisionArg::value_variants() {
            let name = d.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(ApprovalDecision::from(*d).as_str()));
        }
    }
}
