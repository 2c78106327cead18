//! Performing the engine's effects and turning their outcomes into events.
//!
//! Every effect is safe to perform twice (the engine re-issues effects whose outcome was never
//! recorded). The one that is not naturally idempotent, starting an agent run, is made so by
//! looking the attempt's deterministic session name up before starting.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::error::ExecError;
use super::executor::{Applied, Executor, agent_workflow, delay_until};
use crate::definition::{AgentAction, HttpAction, HttpMethod, NotifyAction, StepAction};
use crate::engine::{AgentStartSpec, Effect, Event};
use crate::model::{Millis, Run};
use crate::notify::Delivery;
use crate::ports::{MAX_DELAY, WorkMessage};

/// Largest HTTP response body kept as a step's output; larger bodies are cut (the run item
/// must stay well inside DynamoDB's 400 KB limit).
pub const MAX_HTTP_OUTPUT_BYTES: usize = 64 * 1024;

/// Record collection of agent-start claims (see `Executor::claim_start`).
pub const START_CLAIMS: &str = "agent-start-claims";
/// How long a claim is kept: far longer than any redelivery or re-issue of the start.
const START_CLAIM_TTL_MS: i64 = 7 * 24 * 3_600_000;

/// The outcome of claiming an attempt's agent start.
enum Claim {
    /// Nobody claimed it before: no start of the attempt happened from a queued message or
    /// a re-issue.
    First,
    /// Claimed before: a start may have happened.
    Taken,
    /// No record store to claim in (starts look up as they did without claims).
    NoStore,
    /// The claim could not be written or read back.
    Unknown,
}

/// Characters of a failing response body quoted in the step's error.
const ERROR_SNIPPET_CHARS: usize = 200;

impl Executor {
    /// Perform one effect. `Ok(Some(event))` is the outcome to feed back; `Err` only for a
    /// queue send that did not go out (the message is then retried as a whole).
    pub(super) async fn perform(
        &self,
        applied: &Applied,
        effect: &Effect,
    ) -> Result<Option<Event>, ExecError> {
        let run = &applied.run;
        if let Some(notifier) = &self.notifier
            && let Some(delivery) = self.delivery_for(run, effect)
        {
            if self.wanted(notifier, run, &delivery).await {
                self.queue_delivery(&run.id, delivery).await?;
            } else {
                debug!(
                    delivery = delivery.name(),
                    "nobody receives this delivery (no Slack, no subscription, nothing to chain or release); not queued"
                );
            }
            return Ok(None);
        }
        match effect {
            Effect::StartAgent {
                step,
                attempt,
                spec,
                reissue,
            } => {
                // A start performed right after its own write is the only one; any other may
                // repeat one that happened, so it claims the attempt first (see `claim_start`).
                let look_up = if applied.fresh && !*reissue {
                    false
                } else {
                    match self.claim_start(spec).await {
                        Claim::First => *reissue,
                        Claim::Taken | Claim::NoStore => true,
                        Claim::Unknown => return Ok(None),
                    }
                };
                Ok(self.start_agent(run, step, *attempt, spec, look_up).await)
            }
            Effect::PollAgent {
                step,
                attempt,
                upstream_run_id,
                poll,
                delay_ms,
            } => {
                let delay = Duration::from_millis(*delay_ms).min(MAX_DELAY);
                let message = WorkMessage::Poll {
                    run_id: run.id.clone(),
                    step: step.clone(),
                    attempt: *attempt,
                    upstream_run_id: upstream_run_id.clone(),
                    poll: *poll,
                };
                self.queue.send(&message, delay).await?;
                Ok(None)
            }
            Effect::KillAgent {
                step,
                attempt,
                upstream_run_id,
                session_name,
                force,
            } => Ok(self
                .kill_agent(
                    applied,
                    step,
                    *attempt,
                    upstream_run_id.as_deref(),
                    session_name,
                    *force,
                )
                .await),
            Effect::SendAgentMessage {
                step,
                upstream_run_id,
                content,
                message_type,
            } => {
                self.send_agent_message(step, upstream_run_id, content, message_type)
                    .await;
                Ok(None)
            }
            Effect::RequestApproval {
                step,
                approval_id,
                message,
                approvers,
                required,
                expires_at,
                slack_channel,
                escalation: _,
            } => {
                // Delivery (Slack, signed links) comes with the approvals function.
                info!(
                    step_id = %step,
                    approval_id = %approval_id,
                    approvers = ?approvers,
                    required,
                    expires_at = ?expires_at,
                    slack_channel = ?slack_channel,
                    message = %message,
                    "approval requested"
                );
                Ok(None)
            }
            Effect::RemindApproval {
                step,
                approval_id,
                reminder,
            } => {
                info!(step_id = %step, approval_id = %approval_id, reminder, "approval reminder");
                Ok(None)
            }
            Effect::CloseApproval {
                step,
                approval_id,
                status,
            } => {
                info!(step_id = %step, approval_id = %approval_id, status = %status, "approval closed");
                Ok(None)
            }
            Effect::CallHttp {
                step,
                attempt,
                method,
                url,
                headers,
                body,
                expect_status,
            } => {
                let outcome = self
                    .http_call(*method, url, headers, body.as_ref(), expect_status)
                    .await;
                Ok(Some(step_outcome(step, *attempt, outcome)))
            }
            Effect::Notify {
                step,
                attempt,
                message,
                slack_channel,
                webhook_url,
            } => {
                let outcome = self
                    .notify(
                        &run.id,
                        step,
                        message,
                        slack_channel.as_deref(),
                        webhook_url.as_deref(),
                    )
                    .await;
                Ok(Some(step_outcome(step, *attempt, outcome)))
            }
            Effect::Compensate { step, action } => Ok(self.compensate(run, step, action).await),
            Effect::ScheduleWake { at } => {
                let delay = delay_until(self.clock.now_ms(), *at);
                let message = WorkMessage::Wake {
                    run_id: run.id.clone(),
                    at: Some(*at),
                };
                self.queue.send(&message, delay).await?;
                Ok(None)
            }
            Effect::Emit { event, step, data } => {
                // Subscribers (outbound webhooks, chaining) come with the triggers function.
                info!(
                    target: "flowgate::events",
                    lifecycle_event = %event,
                    step_id = ?step,
                    data = %data,
                    "lifecycle event"
                );
                Ok(None)
            }
        }
    }

    /// Claim an attempt's agent start before performing it from anywhere but right after its
    /// own write (a queued message that may be delivered twice, a re-issue): the claim is a
    /// create-if-absent record keyed by the attempt's session name. Every such start claims
    /// first, so whoever creates the claim of a queued start is the first to start the
    /// attempt at all and needs no look-up by session name (which lists the agent service's
    /// recent runs and grew to seconds under load); a claim already there means a start may
    /// have happened, so look it up. A re-issue always looks up (the first start may have been
    /// one right after its write, which does not claim). When the claim cannot be written, the
    /// start waits for the engine's re-issue rather than risk a second agent run.
    async fn claim_start(&self, spec: &AgentStartSpec) -> Claim {
        let Some(records) = self.records() else {
            return Claim::NoStore;
        };
        let expires_at = self.clock.now_ms() + START_CLAIM_TTL_MS;
        match records
            .create_record(
                START_CLAIMS,
                &spec.session_name,
                &json!({"workflow": spec.workflow}),
                Some(expires_at),
            )
            .await
        {
            Ok(true) => Claim::First,
            Ok(false) => Claim::Taken,
            Err(e) => {
                warn!(error = %e, "could not claim the agent start; not starting now (the engine re-issues it in 30 s)");
                Claim::Unknown
            }
        }
    }

    /// Start an attempt's agent run at most once: when `look_up` (a re-issued start, or one
    /// from a queued message that may arrive twice), look for a run already started with the
    /// attempt's session name (a crash or lost answer may have hidden it) and start one only
    /// if there is none. A first start performed right after its own write skips the look-up
    /// (one agent API call, and a listing that grows with the service's recent runs): nobody
    /// else can have performed it. An error that leaves it unknown whether a run was created
    /// (timeout, 5xx after sending) starts nothing: the engine re-issues the start 30 s later,
    /// and that re-issue looks the run up by session name first.
    async fn start_agent(
        &self,
        run: &Run,
        step: &str,
        attempt: u32,
        spec: &AgentStartSpec,
        look_up: bool,
    ) -> Option<Event> {
        let started = |upstream_run_id: String| Event::AgentStarted {
            step: step.to_string(),
            attempt,
            upstream_run_id,
        };
        let not_before = attempt_started_at(run, step);
        let found = if look_up {
            self.agent
                .find_run_by_session_name(&spec.workflow, &spec.session_name, not_before)
                .await
        } else {
            Ok(None)
        };
        match found {
            Ok(Some(found)) if !found.run_id.is_empty() => {
                info!(upstream_run_id = %found.run_id, "the attempt's agent run already exists; adopting it");
                return Some(started(found.run_id));
            }
            Ok(_) => {}
            Err(e) => {
                warn!(
                    error = %e,
                    "could not check for an existing agent run; not starting one now (the \
                     engine re-issues the start in 30 s)"
                );
                return None;
            }
        }
        match self.agent.start_run(spec).await {
            Ok(response) => {
                info!(upstream_run_id = %response.run_id, "agent run started");
                Some(started(response.run_id))
            }
            Err(e) if e.outcome_unknown() => {
                warn!(
                    error = %e,
                    "the start may or may not have created an agent run; not starting again \
                     now (the re-issued start looks it up by session name first)"
                );
                None
            }
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "the start was not accepted for now; the engine re-issues it in 30 s");
                None
            }
            Err(e) => {
                warn!(error = %e, "the agent service refused the start");
                Some(Event::AgentStartFailed {
                    step: step.to_string(),
                    attempt,
                    error: e.to_string(),
                })
            }
        }
    }

    /// Kill an agent run if it is still active (a finished run keeps its outcome). Without a
    /// known run id the run is looked up by the attempt's session name; no run means nothing
    /// to kill. A failed kill reports nothing: a graceful cancel escalates to a forced kill
    /// after its grace period, which re-issues it.
    async fn kill_agent(
        &self,
        applied: &Applied,
        step: &str,
        attempt: u32,
        upstream_run_id: Option<&str>,
        session_name: &str,
        force: bool,
    ) -> Option<Event> {
        let killed = Event::AgentKilled {
            step: step.to_string(),
            attempt,
        };
        let run_id = match upstream_run_id {
            Some(id) => id.to_string(),
            None => {
                let Some(workflow) = agent_workflow(&applied.def, step) else {
                    return Some(killed);
                };
                let not_before = attempt_started_at(&applied.run, step);
                match self
                    .agent
                    .find_run_by_session_name(&workflow, session_name, not_before)
                    .await
                {
                    Ok(Some(found)) => found.run_id,
                    Ok(None) => {
                        info!("no agent run was started for this attempt; nothing to kill");
                        return Some(killed);
                    }
                    Err(e) => {
                        warn!(error = %e, "could not look up the agent run to kill");
                        return None;
                    }
                }
            }
        };
        match self.agent.kill_if_active(&run_id, force).await {
            Ok(outcome) => {
                info!(
                    upstream_run_id = %run_id,
                    last_status = ?outcome.last_status,
                    killed = outcome.kill.is_some(),
                    force,
                    "agent run stopped"
                );
                Some(killed)
            }
            Err(e) if e.is_not_found() => {
                info!(upstream_run_id = %run_id, "the agent run no longer exists; nothing to kill");
                Some(killed)
            }
            Err(e) => {
                warn!(upstream_run_id = %run_id, error = %e, "killing the agent run failed");
                None
            }
        }
    }

    /// Queue feedback into a running agent run. Not retried: the service has no idempotency
    /// for messages, and a duplicate instruction is worse than a logged failure.
    async fn send_agent_message(
        &self,
        step: &str,
        upstream_run_id: &str,
        content: &str,
        message_type: &str,
    ) {
        let kind = match message_type.parse() {
            Ok(kind) => kind,
            Err(e) => {
                warn!(step_id = %step, error = %e, "feedback not sent");
                return;
            }
        };
        match self.agent.add_message(upstream_run_id, kind, content).await {
            Ok(response) => info!(
                step_id = %step,
                upstream_run_id = %upstream_run_id,
                queue_size = response.queue_size,
                "feedback queued for the agent"
            ),
            Err(e) => warn!(
                step_id = %step,
                upstream_run_id = %upstream_run_id,
                error = %e,
                "feedback could not be delivered to the agent"
            ),
        }
    }

    /// One HTTP call: `Ok(output)` for a 2xx or an expected status (the JSON body if it
    /// parses, else the text), `Err("<status> <snippet>")` otherwise; connect errors and
    /// timeouts are failures too.
    async fn http_call(
        &self,
        method: HttpMethod,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: Option<&Value>,
        expect_status: &[u16],
    ) -> Result<Value, String> {
        let shown = redact_url(url);
        let mut header_map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("header {name} has a value HTTP cannot carry"))?;
            header_map.insert(name, value);
        }
        let mut request = self
            .http()?
            .request(reqwest_method(method), url)
            .headers(header_map);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method:?} {shown} failed: {}", describe(&e)))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("reading the answer of {shown} failed: {}", describe(&e)))?;
        if (200..300).contains(&status) || expect_status.contains(&status) {
            Ok(body_output(&bytes))
        } else {
            let text = String::from_utf8_lossy(&bytes);
            let mut snippet: String = text.chars().take(ERROR_SNIPPET_CHARS).collect();
            if text.chars().count() > ERROR_SNIPPET_CHARS {
                snippet.push('…');
            }
            Err(format!("{status} {snippet}").trim_end().to_string())
        }
    }

    /// A notification: a webhook gets `{"text", "run_id", "step"}` as JSON; a Slack channel is
    /// only logged until the Slack client lands.
    async fn notify(
        &self,
        run_id: &str,
        step: &str,
        message: &str,
        slack_channel: Option<&str>,
        webhook_url: Option<&str>,
    ) -> Result<Value, String> {
        if let Some(channel) = slack_channel {
            info!(step_id = %step, slack_channel = %channel, message = %message, "notification for Slack (logged only; Slack delivery comes later)");
        }
        if let Some(url) = webhook_url {
            let body = json!({"text": message, "run_id": run_id, "step": step});
            self.http_call(HttpMethod::Post, url, &BTreeMap::new(), Some(&body), &[])
                .await
                .map_err(|e| format!("notification webhook failed: {e}"))?;
            info!(step_id = %step, webhook = %redact_url(url), "notification delivered");
        } else if slack_channel.is_none() {
            info!(step_id = %step, message = %message, "notification without a destination (logged only)");
        }
        Ok(json!({"message": message}))
    }

    /// A compensation action. An agent compensation counts as done once its run is accepted
    /// (it is looked up by a deterministic session name first, like a step's start).
    async fn compensate(&self, run: &Run, step: &str, action: &StepAction) -> Option<Event> {
        let finished = |result: Result<Value, String>| Event::CompensationFinished {
            step: step.to_string(),
            ok: result.is_ok(),
            error: result.err(),
        };
        match action {
            StepAction::Http(HttpAction {
                method,
                url,
                headers,
                body,
                expect_status,
            }) => Some(finished(
                self.http_call(*method, url, headers, body.as_ref(), expect_status)
                    .await,
            )),
            StepAction::Notify(NotifyAction {
                message,
                slack_channel,
                webhook_url,
            }) => Some(finished(
                self.notify(
                    &run.id,
                    step,
                    message,
                    slack_channel.as_deref(),
                    webhook_url.as_deref(),
                )
                .await,
            )),
            StepAction::Agent(action) => self.compensate_with_agent(run, step, action).await,
            other => Some(finished(Err(format!(
                "a {} action cannot compensate a step; use an http, notify or agent action",
                other.kind().as_str()
            )))),
        }
    }

    async fn compensate_with_agent(
        &self,
        run: &Run,
        step: &str,
        action: &AgentAction,
    ) -> Option<Event> {
        let attempt = run.steps.get(step).map_or(0, |s| s.attempt);
        // The step finished before its compensation could start: runs older than that are
        // not the compensation's.
        let completed_at = run.steps.get(step).and_then(|s| s.completed_at);
        let spec = AgentStartSpec {
            workflow: action.workflow.clone(),
            message: action.message.clone(),
            max_turns: action.max_turns,
            session_name: format!("flowgate-{}-{step}-{attempt}-compensate", run.id),
            session_id: None,
            repository_url: action.repository_url.clone(),
            git_branch: action.git_branch.clone(),
            timeout_secs: None,
        };
        let done = |ok: bool, error: Option<String>| {
            Some(Event::CompensationFinished {
                step: step.to_string(),
                ok,
                error,
            })
        };
        match self
            .agent
            .find_run_by_session_name(&spec.workflow, &spec.session_name, completed_at)
            .await
        {
            Ok(Some(found)) => {
                info!(upstream_run_id = %found.run_id, "compensation agent run already started");
                return done(true, None);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "could not check for an existing compensation run; the engine re-issues it");
                return None;
            }
        }
        match self.agent.start_run(&spec).await {
            Ok(response) => {
                info!(upstream_run_id = %response.run_id, "compensation agent run started");
                done(true, None)
            }
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "compensation start not confirmed; the engine re-issues it");
                None
            }
            Err(e) => done(false, Some(e.to_string())),
        }
    }
}

fn step_outcome(step: &str, attempt: u32, outcome: Result<Value, String>) -> Event {
    match outcome {
        Ok(output) => Event::StepSucceeded {
            step: step.to_string(),
            attempt,
            output,
        },
        Err(error) => Event::StepFailed {
            step: step.to_string(),
            attempt,
            error,
        },
    }
}

fn attempt_started_at(run: &Run, step: &str) -> Option<Millis> {
    run.steps.get(step).and_then(|s| s.attempt_started_at)
}

fn reqwest_method(method: HttpMethod) -> reqwest::Method {
    match method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
    }
}

/// A response body as a step output: its JSON if it parses, else its text, cut at
/// [`MAX_HTTP_OUTPUT_BYTES`].
fn body_output(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if bytes.len() <= MAX_HTTP_OUTPUT_BYTES
        && let Ok(json) = serde_json::from_slice::<Value>(bytes)
    {
        return json;
    }
    let cut = &bytes[..bytes.len().min(MAX_HTTP_OUTPUT_BYTES)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > MAX_HTTP_OUTPUT_BYTES {
        text.push_str(&format!(
            "… (cut at {MAX_HTTP_OUTPUT_BYTES} of {} bytes)",
            bytes.len()
        ));
    }
    Value::String(text)
}

/// A URL without its query string (which may carry tokens), for errors and logs.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let had_query = parsed.query().is_some();
            parsed.set_query(None);
            if had_query {
                format!("{parsed}?…")
            } else {
                parsed.to_string()
            }
        }
        Err(_) => url.split('?').next().unwrap_or_default().to_string(),
    }
}

/// A reqwest error with its causes, without repeating the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "no answer in time".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Executor {
    /// Whether a delivery has anyone to deliver to. Every delivery costs a queue message and
    /// an invocation, so one that would only be logged is not queued: approval messages and
    /// run threads need Slack; a lifecycle event needs Slack or a webhook subscription that
    /// wants it, and a run's end also goes out when the run holds a concurrency slot (the
    /// next queued run waits on it) or another workflow chains on this one.
    async fn wanted(
        &self,
        notifier: &crate::notify::Notifier,
        run: &Run,
        delivery: &Delivery,
    ) -> bool {
        if notifier.slack_client().is_some() {
            return true;
        }
        match delivery {
            Delivery::Lifecycle { event, .. } => {
                let finished = super::chain::FINISHED_EVENTS.contains(&event.as_str());
                (finished
                    && (run.concurrency_group.is_some()
                        || self.chained_from(&run.workflow_id).await))
                    || notifier
                        .webhooks()
                        .anyone_wants(event, &run.workflow_id)
                        .await
            }
            Delivery::Webhook { .. } => true,
            Delivery::ApprovalRequested { .. }
            | Delivery::ApprovalReminder { .. }
            | Delivery::ApprovalClosed { .. }
            | Delivery::SlackEphemeral { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_json_or_text() {
        assert_eq!(body_output(br#"{"ok":true}"#), json!({"ok": true}));
        assert_eq!(body_output(b"plain"), json!("plain"));
        assert_eq!(body_output(b""), Value::Null);
        let big = vec![b'x'; MAX_HTTP_OUTPUT_BYTES + 10];
        let Value::String(text) = body_output(&big) else {
            panic!("a big body is text");
        };
        assert!(text.ends_with(&format!("of {} bytes)", MAX_HTTP_OUTPUT_BYTES + 10)));
    }

    #[test]
    fn urls_lose_their_query_in_messages() {
        assert_eq!(
            redact_url("https://hooks.example.com/x?token=secret"),
            "https://hooks.example.com/x?…"
        );
        assert_eq!(redact_url("not a url?token=1"), "not a url");
    }
}
