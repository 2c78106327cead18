//! The decision function and its helpers.
//!
//! Shape of one decision: apply the event (commands may be refused), then `advance` the run
//! (fire due timers, start ready steps, finish or compensate), then compute the next wake-up.
//! Everything is a function of `(run, definition, event, now)`.

use serde_json::{Value, json};

use super::types::*;
use crate::definition::{
    AgentAction, ApprovalAction, Budget, HttpAction, NotifyAction, OnExceed, OnExpiry,
    PollingPolicy, StepAction, StepDef, When, WorkflowDefinition,
};
use crate::duration::DurationSpec;
use crate::model::*;
use crate::template::{self, TemplateContext};

/// Polls that see no progress are not written, except once per heartbeat, so the store (and
/// the sweeper) can still tell a live poll chain from a lost one.
pub const POLL_HEARTBEAT_MS: i64 = 300_000;
/// How often a poll records an agent's progress when the workflow does not say
/// (`polling.progress_every`): once per heartbeat.
pub const DEFAULT_PROGRESS_EVERY_MS: i64 = POLL_HEARTBEAT_MS;
/// Slack before a poll chain that has not written for a heartbeat plus one poll interval is
/// presumed lost and re-issued on the next tick. A chain's message is handed back to the queue
/// from poll to poll, so it goes missing only in rare failures (dropped after an agent error
/// retrying cannot fix, or moved to the dead-letter queue); ten minutes of slack lets the
/// heartbeat writes of a live chain leave the run's wake-up (a delete and a put in the store's
/// due index each time it moves) alone for two heartbeats out of three.
pub const POLL_LOST_AFTER_MS: i64 = 600_000;
/// A run write moves an earlier `wake_at` on to the exact time when it is this close (see
/// `Cx::finish`): a write then saves the wake-up's own write a little later.
pub const WAKE_REFRESH_MARGIN_MS: i64 = 120_000;
/// An effect whose outcome was not recorded this long after it was issued is issued again.
pub const REISSUE_AFTER_MS: i64 = 30_000;
/// After a graceful cancel, agent runs not confirmed dead are killed with force.
pub const CANCEL_GRACE_MS: i64 = 30_000;
/// An agent kill not confirmed within this long is issued again (then backing off, doubling
/// up to [`MAX_KILL_RETRY_MS`]).
pub const KILL_RETRY_MS: i64 = 60_000;
/// The longest wait between two tries of an unconfirmed kill.
pub const MAX_KILL_RETRY_MS: i64 = 30 * 60_000;
/// Tries of one kill before it is given up (about a day of backing off).
pub const MAX_KILL_TRIES: u32 = 50;
/// What the agent service really accepts for a run timeout (see the agent API page, quirk 2).
pub const AGENT_TIMEOUT_SECS: (u64, u64) = (60, 7_200);

/// The actor of what nobody in particular did (timers, the engine itself).
pub const SYSTEM: &str = "system";

/// Decide what one event means for a run.
///
/// Stale and duplicate events are no-ops (the returned decision equals the input run and has no
/// effects); commands that cannot apply (cancel a finished run, feedback to a step that is not
/// running, a decision by someone who may not decide) are refused with a [`Rejection`].
pub fn decide(
    run: &Run,
    def: &WorkflowDefinition,
    event: &Event,
    now: Millis,
) -> Result<Decision, Rejection> {
    let mut next = run.clone();
    let changes = decide_mut(&mut next, def, event, now)?;
    Ok(Decision {
        run: next,
        effects: changes.effects,
        audit: changes.audit,
    })
}

/// What [`decide_mut`] did to the run it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    pub effects: Vec<Effect>,
    pub audit: Vec<AuditEntry>,
    /// Whether the run changed (and so must be written). Exact: the property tests compare it
    /// with a full before/after comparison.
    pub changed: bool,
}

/// The same decision as [`decide`], made on the caller's run in place, without copying it.
///
/// On a [`Rejection`] the run is left exactly as it was: commands are checked before anything
/// is touched.
pub fn decide_mut(
    run: &mut Run,
    def: &WorkflowDefinition,
    event: &Event,
    now: Millis,
) -> Result<Changes, Rejection> {
    let before_timer = next_timer(run, def);
    let mut cx = Cx {
        run,
        def,
        now,
        effects: Vec::new(),
        audit: Vec::new(),
        tick: matches!(event, Event::Tick),
        dirty: false,
    };
    cx.apply(event)?;
    cx.advance();
    Ok(cx.finish(before_timer))
}

/// Which gate an approval id names.
#[derive(Debug, Clone)]
enum Gate {
    /// An approval step's gate.
    Step(String),
    /// The run's budget question.
    Budget,
}

struct Cx<'a> {
    run: &'a mut Run,
    def: &'a WorkflowDefinition,
    now: Millis,
    effects: Vec<Effect>,
    audit: Vec<AuditEntry>,
    tick: bool,
    /// Set by every write to the run (all of them go through `st` or `log`).
    dirty: bool,
}

impl Cx<'_> {
    // ----- bookkeeping -------------------------------------------------------------------

    fn log(
        &mut self,
        actor: &str,
        kind: &str,
        step: Option<&str>,
        attempt: Option<u32>,
        message: String,
        data: Value,
    ) {
        self.audit.push(AuditEntry {
            run_id: self.run.id.clone(),
            seq: self.run.audit_seq,
            at: self.now,
            actor: actor.to_string(),
            kind: kind.to_string(),
            step_id: step.map(str::to_string),
            attempt,
            message,
            data,
        });
        self.run.audit_seq += 1;
        self.dirty = true;
    }

    fn emit(&mut self, event: &str, step: Option<&str>, data: Value) {
        self.effects.push(Effect::Emit {
            event: event.to_string(),
            step: step.map(str::to_string),
            data,
        });
    }

    /// Mutable access to a step's state; marks the run changed, so call it only to write.
    fn st(&mut self, id: &str) -> &mut StepState {
        self.dirty = true;
        // `entry` would allocate a key on every call; steps almost always exist already.
        if !self.run.steps.contains_key(id) {
            self.run.steps.insert(id.to_string(), StepState::default());
        }
        self.run.steps.get_mut(id).expect("inserted above")
    }

    fn status_of(&self, id: &str) -> StepStatus {
        self.run
            .steps
            .get(id)
            .map(|s| s.status)
            .unwrap_or(StepStatus::Pending)
    }

    fn finish(mut self, before_timer: Option<Millis>) -> Changes {
        let timer = next_timer(self.run, self.def);
        // An earlier wake-up still ahead stays: moving it on every write (a live poll chain's
        // lost-at moves with every poll) would cost the store's due index a delete and a put
        // per write. Never later than the exact time, so never late; once it passes, the next
        // decision (or the sweeper's tick) moves it on, and a write that happens anyway moves
        // it on when it is near, so a busy run is rarely woken for nothing.
        let keep_until = if self.dirty {
            self.now + WAKE_REFRESH_MARGIN_MS
        } else {
            self.now
        };
        let wake = match (self.run.wake_at, wake_after(self.run, self.def, timer)) {
            (Some(stored), Some(exact)) if stored <= exact && stored > keep_until => Some(stored),
            (_, exact) => exact,
        };
        if wake != self.run.wake_at {
            self.run.wake_at = wake;
            self.dirty = true;
        }
        if let Some(at) = timer
            && timer != before_timer
        {
            self.effects.push(Effect::ScheduleWake { at });
        }
        if self.dirty {
            self.run.updated_at = self.now;
        }
        Changes {
            effects: self.effects,
            audit: self.audit,
            changed: self.dirty,
        }
    }

    fn active(&self) -> bool {
        matches!(
            self.run.status,
            RunStatus::Running | RunStatus::Cancelling | RunStatus::Compensating
        )
    }

    // ----- events ------------------------------------------------------------------------

    fn apply(&mut self, event: &Event) -> Result<(), Rejection> {
        match event {
            Event::Start => self.on_start(),
            // A tick for a run whose Start message was lost starts it (the sweeper wakes runs
            // that are still pending past their `wake_at`).
            Event::Tick => {
                self.reissue_kills();
                self.on_start();
            }
            Event::Admit => {
                if self.run.queued {
                    self.run.queued = false;
                    self.dirty = true;
                }
                self.on_start();
            }
            Event::AgentStarted {
                step,
                attempt,
                upstream_run_id,
            } => self.on_agent_started(step, *attempt, upstream_run_id),
            Event::AgentStartFailed {
                step,
                attempt,
                error,
            } => {
                if self.is_current(step, *attempt, StepStatus::Running)
                    && self
                        .agent_of(step)
                        .is_some_and(|a| a.upstream_run_id.is_none())
                {
                    self.fail_attempt(step, format!("agent run could not start: {error}"), false);
                }
            }
            Event::AgentObserved {
                step,
                attempt,
                poll,
                observation,
            } => self.on_agent_observed(step, *attempt, *poll, observation),
            Event::AgentKilled { step, attempt } => {
                let before = self.run.pending_kills.len();
                self.run
                    .pending_kills
                    .retain(|k| !(k.step == *step && k.attempt == *attempt));
                if self.run.pending_kills.len() != before {
                    self.dirty = true;
                }
                if self.run.steps.get(step).is_some_and(|s| {
                    s.attempt == *attempt && s.agent.as_ref().is_some_and(|a| a.kill_requested)
                }) && let Some(a) = self.st(step).agent.as_mut()
                {
                    a.kill_requested = false;
                    self.log(
                        SYSTEM,
                        "agent.killed",
                        Some(step),
                        Some(*attempt),
                        "agent run stopped".into(),
                        Value::Null,
                    );
                }
            }
            Event::StepSucceeded {
                step,
                attempt,
                output,
            } => {
                if self.is_current(step, *attempt, StepStatus::Running)
                    && self.run.steps.get(step).is_some_and(|s| s.effect_pending)
                {
                    self.st(step).effect_pending = false;
                    self.succeed_step(step, output.clone());
                }
            }
            Event::StepFailed {
                step,
                attempt,
                error,
            } => {
                if self.is_current(step, *attempt, StepStatus::Running)
                    && self.run.steps.get(step).is_some_and(|s| s.effect_pending)
                {
                    self.st(step).effect_pending = false;
                    self.fail_attempt(step, error.clone(), false);
                }
            }
            Event::ApprovalDecided {
                approval_id,
                by,
                decision,
                comment,
                groups,
            } => self.on_decision(approval_id, by, groups, *decision, comment.as_deref())?,
            Event::CancelRequested { by, reason, force } => {
                self.on_cancel(by, reason.as_deref(), *force)?
            }
            Event::FeedbackSent {
                step,
                by,
                content,
                message_type,
            } => self.on_feedback(step.as_deref(), by, content, message_type)?,
            Event::RetryRequested { by, from_step } => self.on_retry(by, from_step.as_deref())?,
            Event::RollbackRequested { by, reason } => self.on_rollback(by, reason.as_deref())?,
            Event::CompensationFinished { step, ok, error } => {
                let running = self
                    .run
                    .steps
                    .get(step)
                    .and_then(|s| s.compensation.as_ref())
                    .is_some_and(|c| c.status == CompensationStatus::Running);
                if running {
                    let s = self.st(step);
                    s.timer_at = None;
                    s.compensation = Some(CompensationState {
                        status: if *ok {
                            CompensationStatus::Succeeded
                        } else {
                            CompensationStatus::Failed
                        },
                        error: error.clone(),
                    });
                    let msg = if *ok {
                        "compensation succeeded".to_string()
                    } else {
                        format!(
                            "compensation failed: {}",
                            error.as_deref().unwrap_or("unknown error")
                        )
                    };
                    let kind = if *ok {
                        "compensation.succeeded"
                    } else {
                        "compensation.failed"
                    };
                    self.log(SYSTEM, kind, Some(step), None, msg, Value::Null);
                }
            }
        }
        Ok(())
    }

    fn is_current(&self, step: &str, attempt: u32, status: StepStatus) -> bool {
        self.run
            .steps
            .get(step)
            .is_some_and(|s| s.attempt == attempt && s.status == status)
    }

    fn agent_of(&self, step: &str) -> Option<&AgentProgress> {
        self.run.steps.get(step).and_then(|s| s.agent.as_ref())
    }

    fn on_start(&mut self) {
        // A queued run waits for its slot (`Admit`), whoever ticks it.
        if self.run.status != RunStatus::Pending || self.run.queued {
            return;
        }
        self.run.status = RunStatus::Running;
        self.run.started_at = Some(self.now);
        self.run.deadline = self.def.timeout.as_ref().map(|t| self.now + t.millis_i64());
        let actor = self
            .run
            .started_by
            .clone()
            .unwrap_or_else(|| SYSTEM.to_string());
        let data = json!({"workflow": self.run.workflow_id, "version": self.run.workflow_version});
        self.log(
            &actor,
            "run.started",
            None,
            None,
            format!(
                "run of {} v{} started",
                self.run.workflow_id, self.run.workflow_version
            ),
            data.clone(),
        );
        self.emit("run.started", None, data);
    }

    fn on_agent_started(&mut self, step: &str, attempt: u32, upstream: &str) {
        let expected = self.is_current(step, attempt, StepStatus::Running);
        let known = self.agent_of(step).and_then(|a| a.upstream_run_id.clone());
        match (expected, known) {
            (true, None) => {
                let interval = self.polling().initial.as_millis();
                let now = self.now;
                let s = self.st(step);
                s.timer_at = None;
                if let Some(a) = s.agent.as_mut() {
                    a.upstream_run_id = Some(upstream.to_string());
                    a.upstream_status = Some(AgentRunStatus::Pending);
                    a.polls = 0;
                    a.poll_interval_ms = interval;
                    a.next_poll_at = Some(now + interval as i64);
                    a.polled_at = Some(now);
                    a.last_activity_at = Some(now);
                }
                self.effects.push(Effect::PollAgent {
                    step: step.to_string(),
                    attempt,
                    upstream_run_id: upstream.to_string(),
                    poll: 0,
                    delay_ms: interval,
                });
                self.log(
                    SYSTEM,
                    "agent.started",
                    Some(step),
                    Some(attempt),
                    format!("agent run {upstream} started"),
                    json!({"upstream_run_id": upstream}),
                );
            }
            (_, Some(known)) if known == upstream => {} // duplicate delivery
            _ => {
                // A run we no longer want (stale attempt, cancelled step, or a second start that
                // slipped through): stop it so it costs nothing.
                self.kill_agent(
                    step,
                    attempt,
                    Some(upstream.to_string()),
                    session_name(&self.run.id, step, attempt),
                    true,
                );
                self.log(
                    SYSTEM,
                    "agent.orphan_killed",
                    Some(step),
                    Some(attempt),
                    format!("agent run {upstream} is not wanted by this step any more; killing it"),
                    json!({"upstream_run_id": upstream}),
                );
            }
        }
    }

    fn polling(&self) -> &PollingPolicy {
        polling_of(self.def)
    }

    /// A status poll answered.
    ///
    /// The interval backs off on every poll and drops back to the start only when the agent
    /// run's status changes (pending → running; the poll that saw it counts as the first of
    /// the new backoff) or feedback was sent: tokens grow on nearly every
    /// poll of a live run, so treating them as a reason to poll fast would poll fast forever.
    /// A poll that records something (a change of status, progress that is due or crosses a
    /// budget) starts a new poll chain (`polls + 1`), so a duplicate of the old chain's message
    /// is stale. A poll that records nothing, or only a heartbeat, goes on with the same chain:
    /// its next poll is the same message, which the executor hands back to the queue, and the
    /// interval is continued from the run's last recorded poll (`polled_at`,
    /// `poll_interval_ms`), so the message need not carry it.
    fn on_agent_observed(&mut self, step: &str, attempt: u32, poll: u32, obs: &AgentObservation) {
        if !self.is_current(step, attempt, StepStatus::Running) {
            return;
        }
        let Some(a) = self.agent_of(step) else { return };
        if a.polls != poll || a.upstream_run_id.is_none() {
            return; // a duplicate or late poll answer
        }
        let status_changed = obs.status != a.upstream_status;
        let session_changed = obs.session_id.is_some() && obs.session_id != a.session_id;
        let progressed =
            obs.turns != a.turns || obs.tokens != a.tokens || obs.cost_usd != a.cost_usd;
        let upstream = a.upstream_run_id.clone().unwrap_or_default();
        let polling = polling_of(self.def);
        let now = self.now;
        // Progress alone is recorded at most every `polling.progress_every`, by default once
        // per heartbeat (5 minutes): polls are there to notice a change of status (recorded at
        // once) and a budget crossed (below); whoever reads the run sees progress live from
        // the agent service (`runtime::observe_live`), so a write per poll would buy nothing.
        let every = polling
            .progress_every
            .as_ref()
            .map_or(DEFAULT_PROGRESS_EVERY_MS, DurationSpec::millis_i64);
        let progress_due = a.last_activity_at.is_none_or(|t| now - t >= every);
        // Budgets are checked against recorded progress, so progress that crosses one is
        // recorded whenever it comes, however recently the last was.
        let crosses_budget = progressed && !progress_due && self.has_budgets() && {
            let mut trial = self.run.clone();
            if let Some(t) = trial.steps.get_mut(step).and_then(|s| s.agent.as_mut()) {
                take_progress(t, obs);
            }
            budget_crossing(&trial, self.def, now).is_some()
        };
        let changed =
            status_changed || session_changed || (progressed && (progress_due || crosses_budget));
        // A change of status (the run leaving `pending`) restarts the backoff, counting this
        // poll as the first of the new chain: a long setup does not leave the run's real work
        // polled slowly, and a short one does not cost an extra quick poll. Otherwise the
        // backoff goes on from the last recorded poll (polls in between were not written).
        let interval = if status_changed {
            polling.next_interval(polling.initial.as_millis())
        } else {
            let recorded_at = a.polled_at.unwrap_or(now);
            polling.interval_since(a.poll_interval_ms, now - recorded_at)
        };
        if !changed {
            let heartbeat = a.polled_at.is_none_or(|p| now - p >= POLL_HEARTBEAT_MS);
            if heartbeat && let Some(a) = self.st(step).agent.as_mut() {
                a.polled_at = Some(now);
                a.poll_interval_ms = interval;
                a.next_poll_at = Some(now + interval as i64);
            }
            self.effects.push(Effect::PollAgent {
                step: step.to_string(),
                attempt,
                upstream_run_id: upstream,
                poll,
                delay_ms: interval,
            });
            return;
        }
        {
            let s = self.st(step);
            let Some(a) = s.agent.as_mut() else { return };
            a.polls += 1;
            a.upstream_status = obs.status;
            take_observed(a, obs);
            if obs.session_id.is_some() {
                a.session_id = obs.session_id.clone();
            }
            a.last_activity_at = Some(now);
            a.polled_at = Some(now);
            a.poll_interval_ms = interval;
            a.next_poll_at = None;
        }
        match obs.status {
            Some(AgentRunStatus::Completed) => {
                let out = obs.output.clone().map(Value::String).unwrap_or(Value::Null);
                self.succeed_step(step, out);
            }
            Some(AgentRunStatus::Failed) => {
                let err = obs
                    .error
                    .clone()
                    .unwrap_or_else(|| "agent run failed (no reason given)".into());
                self.fail_attempt(step, format!("agent run failed: {err}"), false);
            }
            Some(AgentRunStatus::Killed) => {
                self.fail_attempt(step, "agent run was killed outside Flowgate".into(), false);
            }
            _ => {
                let polls = {
                    let s = self.st(step);
                    let Some(a) = s.agent.as_mut() else { return };
                    a.next_poll_at = Some(now + interval as i64);
                    a.polls
                };
                self.effects.push(Effect::PollAgent {
                    step: step.to_string(),
                    attempt,
                    upstream_run_id: upstream,
                    poll: polls,
                    delay_ms: interval,
                });
            }
        }
    }

    /// The approval with this id ([`Run::approval`]) and which gate it is: its kind tells a
    /// budget question from an approval step's gate.
    fn find_approval(&self, approval_id: &str) -> Option<(Gate, ApprovalState)> {
        let (step, a) = self.run.approval(approval_id)?;
        let gate = match (a.kind, step) {
            (ApprovalKind::Budget, _) => Gate::Budget,
            (ApprovalKind::Step, Some(step)) => Gate::Step(step.to_string()),
            (ApprovalKind::Step, None) => return None,
        };
        Some((gate, a.clone()))
    }

    fn approval_mut(&mut self, gate: &Gate) -> Option<&mut ApprovalState> {
        match gate {
            Gate::Step(id) => self.st(id).approval.as_mut(),
            Gate::Budget => {
                self.dirty = true;
                self.run.budget_gate.as_mut().map(|g| &mut g.approval)
            }
        }
    }

    fn on_decision(
        &mut self,
        approval_id: &str,
        by: &str,
        groups: &[String],
        decision: ApprovalDecision,
        comment: Option<&str>,
    ) -> Result<(), Rejection> {
        let Some((gate, approval)) = self.find_approval(approval_id) else {
            return Err(Rejection::UnknownApproval(approval_id.to_string()));
        };
        if approval.decisions.iter().any(|d| d.by == by) {
            return Ok(()); // a second click or a re-send: already counted
        }
        if approval.status != ApprovalStatus::Pending || !self.active() {
            return Err(Rejection::ApprovalClosed {
                approval_id: approval_id.to_string(),
                status: approval.status.to_string(),
            });
        }
        if !approval.allows(by, groups) {
            return Err(Rejection::NotAnApprover {
                approval_id: approval_id.to_string(),
                by: by.to_string(),
            });
        }
        // Whoever started the run may not wave it through their own gate; a budget gate is
        // about their own spend, so they may answer it.
        if matches!(decision, ApprovalDecision::Approve | ApprovalDecision::Skip)
            && approval.kind == ApprovalKind::Step
            && self.run.started_by.as_deref() == Some(by)
        {
            return Err(Rejection::SelfApproval { by: by.to_string() });
        }
        let comment = comment.map(str::trim).filter(|c| !c.is_empty());
        let not_offered = |why: &str| Rejection::DecisionNotOffered {
            approval_id: approval_id.to_string(),
            decision,
            why: why.to_string(),
        };
        let mut retry_target = None;
        match (&gate, decision) {
            (Gate::Budget, ApprovalDecision::Retry | ApprovalDecision::Skip) => {
                return Err(not_offered(
                    "a budget question is answered with approve (continue), reject or cancel",
                ));
            }
            (Gate::Step(step), ApprovalDecision::Retry) => {
                if comment.is_none() {
                    return Err(Rejection::CommentRequired {
                        approval_id: approval_id.to_string(),
                        decision,
                        what: "the feedback the agent step gets on its next attempt",
                    });
                }
                retry_target = Some(self.retry_target(step).ok_or_else(|| {
                    not_offered("no agent step before this approval to run again")
                })?);
            }
            _ => {}
        }
        let record = DecisionRecord {
            by: by.to_string(),
            decision,
            comment: comment.map(str::to_string),
            at: self.now,
        };
        let approvals = approval
            .decisions
            .iter()
            .filter(|d| d.decision == ApprovalDecision::Approve)
            .count() as u32
            + u32::from(decision == ApprovalDecision::Approve);
        let new_status = match decision {
            ApprovalDecision::Approve if approvals >= approval.required => ApprovalStatus::Approved,
            ApprovalDecision::Approve => ApprovalStatus::Pending,
            ApprovalDecision::Reject => ApprovalStatus::Rejected,
            ApprovalDecision::Retry => ApprovalStatus::Retried,
            ApprovalDecision::Skip => ApprovalStatus::Skipped,
            ApprovalDecision::Cancel => ApprovalStatus::Cancelled,
        };
        if let Some(a) = self.approval_mut(&gate) {
            a.decisions.push(record);
            a.status = new_status;
            if new_status != ApprovalStatus::Pending {
                a.remind_at = None;
                a.escalate_at = None;
            }
        }
        let step_id = match &gate {
            Gate::Step(id) => Some(id.clone()),
            Gate::Budget => self.run.budget_gate.as_ref().and_then(|g| g.step.clone()),
        };
        let data = json!({"approval_id": approval_id, "decision": decision, "comment": comment,
                          "approvals": approvals, "required": approval.required,
                          "kind": approval.kind, "status": new_status});
        self.log(
            by,
            "approval.decided",
            step_id.as_deref(),
            None,
            format!("{by} chose {decision} on {approval_id}"),
            data.clone(),
        );
        self.emit("approval.decided", step_id.as_deref(), data);
        if new_status == ApprovalStatus::Pending {
            return Ok(());
        }
        let close_step = step_id.clone().unwrap_or_default();
        self.close_approval(&close_step, approval_id, new_status);
        match gate {
            Gate::Budget => self.on_budget_decision(by, new_status, comment),
            Gate::Step(step) => match new_status {
                ApprovalStatus::Approved => {
                    let by_list: Vec<String> = self
                        .run
                        .steps
                        .get(&step)
                        .and_then(|s| s.approval.as_ref())
                        .map(|a| a.decisions.iter().map(|d| d.by.clone()).collect())
                        .unwrap_or_default();
                    self.succeed_step(
                        &step,
                        json!({"approved": true, "approved_by": by_list, "comment": comment}),
                    );
                }
                ApprovalStatus::Rejected => {
                    let reason = comment.map(|c| format!(": {c}")).unwrap_or_default();
                    self.fail_final(&step, format!("rejected by {by}{reason}"), false);
                }
                ApprovalStatus::Retried => {
                    if let Some(target) = retry_target {
                        self.retry_with_feedback(&target, by, comment.unwrap_or_default());
                    }
                }
                ApprovalStatus::Skipped => self.skip_gate(&step, by, comment),
                ApprovalStatus::Cancelled => {
                    self.cancel_from_gate(by, comment);
                }
                _ => {}
            },
        }
        Ok(())
    }

    fn cancel_from_gate(&mut self, by: &str, comment: Option<&str>) {
        let reason = comment.unwrap_or("cancelled from an approval");
        // The run is active (checked by the caller), so a cancel is always accepted here.
        let _ = self.on_cancel(by, Some(reason), false);
    }

    /// The agent step "retry with feedback" runs again: the approval's `retry_step`, else the
    /// nearest agent step it depends on (breadth first through its dependencies).
    fn retry_target(&self, approval_step: &str) -> Option<String> {
        let d = self.def.step(approval_step)?;
        if let StepAction::Approval(a) = &d.action
            && let Some(t) = &a.retry_step
        {
            return Some(t.clone());
        }
        let mut queue: std::collections::VecDeque<&str> =
            d.depends_on.iter().map(String::as_str).collect();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(id) = queue.pop_front() {
            if !seen.insert(id) {
                continue;
            }
            let dep = self.def.step(id)?;
            if matches!(dep.action, StepAction::Agent(_)) {
                return Some(id.to_string());
            }
            queue.extend(dep.depends_on.iter().map(String::as_str));
        }
        None
    }

    /// Run `target` again with the feedback added to its message, in the same agent
    /// conversation, and everything downstream of it (including the approval) after it.
    fn retry_with_feedback(&mut self, target: &str, by: &str, text: &str) {
        let reset = with_downstream(self.def, vec![target.to_string()]);
        let mut obsolete = Vec::new();
        for id in &reset {
            if self.status_of(id) == StepStatus::Running {
                self.kill_current_agent(id, false);
            }
            let s = self.st(id);
            let prev = std::mem::take(s);
            // Keep how the step's last approval ended (a late click is refused as closed); one
            // still open is obsolete now: close it.
            if let Some(mut a) = prev.approval.clone() {
                if a.status == ApprovalStatus::Pending {
                    a.status = ApprovalStatus::Cancelled;
                    a.remind_at = None;
                    a.escalate_at = None;
                    obsolete.push((id.clone(), a.id.clone()));
                }
                s.approval = Some(a);
            }
            let grants = prev.budget_grants;
            let approval = s.approval.take();
            *s = fresh_state(&prev);
            s.approval = approval;
            s.budget_grants = grants;
            if id == target {
                let session_id = prev
                    .agent
                    .as_ref()
                    .and_then(|a| a.session_id.clone())
                    .or_else(|| prev.feedback.as_ref().and_then(|f| f.session_id.clone()));
                s.feedback = Some(StepFeedback {
                    by: by.to_string(),
                    text: text.to_string(),
                    session_id,
                });
            }
        }
        for (step, approval_id) in obsolete {
            self.close_approval(&step, &approval_id, ApprovalStatus::Cancelled);
        }
        self.log(
            by,
            "step.retry_with_feedback",
            Some(target),
            None,
            format!(
                "{by} asked for step {target} to run again with feedback; steps to run again: {}",
                reset.join(", ")
            ),
            json!({"feedback": text, "steps": reset}),
        );
    }

    /// Skip an approval step: it and the steps that need it are skipped; the run carries on.
    fn skip_gate(&mut self, step: &str, by: &str, comment: Option<&str>) {
        let now = self.now;
        let s = self.st(step);
        s.status = StepStatus::Skipped;
        s.completed_at = Some(now);
        s.timer_at = None;
        s.output = Some(json!({"approved": false, "skipped": true, "by": by, "comment": comment}));
        self.log(
            by,
            "step.skipped",
            Some(step),
            None,
            format!("step {step} skipped by {by}"),
            json!({"comment": comment}),
        );
    }

    fn close_approval(&mut self, step: &str, approval_id: &str, status: ApprovalStatus) {
        self.effects.push(Effect::CloseApproval {
            step: step.to_string(),
            approval_id: approval_id.to_string(),
            status,
        });
    }

    fn on_cancel(&mut self, by: &str, reason: Option<&str>, force: bool) -> Result<(), Rejection> {
        match self.run.status {
            RunStatus::Pending | RunStatus::Running => {}
            RunStatus::Cancelling => {
                // Escalate a graceful cancel to a forced one; otherwise it is a repeat.
                if force && self.run.cancel.as_ref().is_some_and(|c| !c.force) {
                    self.force_outstanding_kills();
                    if let Some(c) = self.run.cancel.as_mut() {
                        c.force = true;
                    }
                    self.finish_cancel();
                }
                return Ok(());
            }
            status => {
                return Err(Rejection::RunNotActive {
                    run_id: self.run.id.clone(),
                    status: status.to_string(),
                    what: "cancelling",
                });
            }
        }
        let now = self.now;
        self.run.cancel = Some(CancelInfo {
            by: by.to_string(),
            reason: reason.map(str::to_string),
            force,
            requested_at: now,
            force_at: now + CANCEL_GRACE_MS,
        });
        self.log(
            by,
            "run.cancel_requested",
            None,
            None,
            format!(
                "cancel requested{}{}",
                if force { " (force)" } else { "" },
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            json!({"force": force, "reason": reason}),
        );
        let ids: Vec<String> = self.def.steps.iter().map(|s| s.id.clone()).collect();
        for id in ids {
            self.stop_step(&id, StepStatus::Cancelled, "run cancelled", force);
        }
        self.close_budget_gate(ApprovalStatus::Cancelled);
        self.run.status = RunStatus::Cancelling;
        self.finish_cancel();
        Ok(())
    }

    /// Move to `cancelled` once no kill is outstanding.
    fn finish_cancel(&mut self) {
        if self.run.status != RunStatus::Cancelling {
            return;
        }
        let outstanding = self
            .run
            .steps
            .values()
            .any(|s| s.agent.as_ref().is_some_and(|a| a.kill_requested));
        if !outstanding {
            self.end_run(RunStatus::Cancelled, None);
        }
    }

    fn force_outstanding_kills(&mut self) {
        let ids: Vec<String> = self.run.steps.keys().cloned().collect();
        for id in ids {
            let outstanding = self
                .run
                .steps
                .get(&id)
                .and_then(|s| s.agent.as_ref())
                .is_some_and(|a| a.kill_requested);
            if !outstanding {
                continue;
            }
            let s = self.st(&id);
            let attempt = s.attempt;
            if let Some(a) = s.agent.as_mut() {
                a.kill_requested = false;
                let (upstream, session) = (a.upstream_run_id.clone(), a.session_name.clone());
                self.kill_agent(&id, attempt, upstream, session, true);
            }
        }
    }

    /// Stop an unfinished step: kill its agent run, close its approval, mark it `status`.
    fn stop_step(&mut self, id: &str, status: StepStatus, why: &str, force: bool) {
        let now = self.now;
        if self.status_of(id).is_terminal() {
            return;
        }
        let s = self.st(id);
        let was = s.status;
        let attempt = s.attempt;
        s.status = status;
        s.completed_at = Some(now);
        s.timer_at = None;
        s.deadline = None;
        s.effect_pending = false;
        if was == StepStatus::Pending || was == StepStatus::Retrying {
            s.error = Some(why.to_string());
        }
        let mut kill = None;
        if was == StepStatus::Running
            && let Some(a) = s.agent.as_mut()
        {
            a.next_poll_at = None;
            a.kill_requested = !force;
            kill = Some(Effect::KillAgent {
                step: id.to_string(),
                attempt,
                upstream_run_id: a.upstream_run_id.clone(),
                session_name: a.session_name.clone(),
                force,
            });
        }
        let mut close = None;
        if let Some(a) = s.approval.as_mut()
            && a.status == ApprovalStatus::Pending
        {
            a.status = ApprovalStatus::Cancelled;
            close = Some(a.id.clone());
        }
        if let Some(Effect::KillAgent {
            step,
            attempt,
            upstream_run_id,
            session_name,
            force,
        }) = kill
        {
            self.kill_agent(&step, attempt, upstream_run_id, session_name, force);
        }
        if let Some(approval_id) = close {
            self.close_approval(id, &approval_id, ApprovalStatus::Cancelled);
        }
        self.log(
            SYSTEM,
            &format!("step.{status}"),
            Some(id),
            (attempt > 0).then_some(attempt),
            format!("step {id} {status}: {why}"),
            Value::Null,
        );
    }

    fn on_feedback(
        &mut self,
        step: Option<&str>,
        by: &str,
        content: &str,
        message_type: &str,
    ) -> Result<(), Rejection> {
        if !matches!(self.run.status, RunStatus::Running) {
            return Err(Rejection::RunNotActive {
                run_id: self.run.id.clone(),
                status: self.run.status.to_string(),
                what: "sending feedback",
            });
        }
        let target = match step {
            Some(id) => {
                let Some(s) = self.run.steps.get(id) else {
                    return Err(Rejection::UnknownStep(id.to_string()));
                };
                let running = s.status == StepStatus::Running
                    && s.agent
                        .as_ref()
                        .is_some_and(|a| a.upstream_run_id.is_some());
                if !running {
                    return Err(Rejection::StepNotRunning {
                        step: id.to_string(),
                        status: s.status.to_string(),
                    });
                }
                id.to_string()
            }
            None => self
                .def
                .steps
                .iter()
                .map(|d| d.id.as_str())
                .find(|id| {
                    self.run.steps.get(*id).is_some_and(|s| {
                        s.status == StepStatus::Running
                            && s.agent
                                .as_ref()
                                .is_some_and(|a| a.upstream_run_id.is_some())
                    })
                })
                .map(str::to_string)
                .ok_or(Rejection::NoRunningAgentStep)?,
        };
        let upstream = self
            .agent_of(&target)
            .and_then(|a| a.upstream_run_id.clone())
            .unwrap_or_default();
        let attempt = self.run.steps.get(&target).map(|s| s.attempt);
        // The agent will react to the message: watch closely again (a new poll chain at the
        // initial interval; the old chain's next poll becomes stale).
        let initial = self.polling().initial.as_millis();
        let now = self.now;
        let poll = {
            let s = self.st(&target);
            let a = s.agent.get_or_insert_with(AgentProgress::default);
            a.polls += 1;
            a.poll_interval_ms = initial;
            a.next_poll_at = Some(now + initial as i64);
            a.polled_at = Some(now);
            a.polls
        };
        self.effects.push(Effect::SendAgentMessage {
            step: target.clone(),
            upstream_run_id: upstream.clone(),
            content: content.to_string(),
            message_type: message_type.to_string(),
        });
        self.effects.push(Effect::PollAgent {
            step: target.clone(),
            attempt: attempt.unwrap_or(1),
            upstream_run_id: upstream,
            poll,
            delay_ms: initial,
        });
        self.log(
            by,
            "agent.feedback",
            Some(&target),
            attempt,
            format!("{by} sent {message_type} feedback"),
            json!({"content": content, "message_type": message_type}),
        );
        Ok(())
    }

    fn on_retry(&mut self, by: &str, from_step: Option<&str>) -> Result<(), Rejection> {
        if !matches!(
            self.run.status,
            RunStatus::Failed | RunStatus::Cancelled | RunStatus::TimedOut
        ) {
            return Err(Rejection::NotRetryable {
                run_id: self.run.id.clone(),
                status: self.run.status.to_string(),
            });
        }
        let reset: Vec<String> = match from_step {
            Some(id) => {
                if self.def.step(id).is_none() {
                    return Err(Rejection::UnknownStep(id.to_string()));
                }
                vec![id.to_string()]
            }
            None => self
                .def
                .steps
                .iter()
                .filter(|d| !matches!(self.status_of(&d.id), StepStatus::Succeeded))
                .map(|d| d.id.clone())
                .collect(),
        };
        // Everything downstream of a reset step runs again too.
        let reset = with_downstream(self.def, reset);
        for id in &reset {
            let s = self.st(id);
            *s = fresh_state(s);
        }
        self.run.status = RunStatus::Running;
        self.run.completed_at = None;
        self.run.error = None;
        self.run.cancel = None;
        self.run.rollback = None;
        self.run.final_status = None;
        self.run.outputs = Default::default();
        self.run.deadline = self.def.timeout.as_ref().map(|t| self.now + t.millis_i64());
        self.log(
            by,
            "run.retried",
            from_step,
            None,
            format!("retry requested; steps to run again: {}", reset.join(", ")),
            json!({"steps": reset}),
        );
        Ok(())
    }

    fn on_rollback(&mut self, by: &str, reason: Option<&str>) -> Result<(), Rejection> {
        if !self.run.status.is_terminal() {
            return Err(Rejection::RunNotActive {
                run_id: self.run.id.clone(),
                status: self.run.status.to_string(),
                what: "rolling back (cancel the run first)",
            });
        }
        if self.compensable().is_empty() {
            return Err(Rejection::NothingToCompensate(self.run.id.clone()));
        }
        let previous = self.run.status;
        self.run.rollback = Some(RollbackInfo {
            by: by.to_string(),
            reason: reason.map(str::to_string),
            requested_at: self.now,
        });
        self.log(
            by,
            "run.rollback_requested",
            None,
            None,
            format!(
                "rollback requested{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            json!({"reason": reason}),
        );
        self.run.completed_at = None;
        self.begin_compensation(previous);
        Ok(())
    }

    // ----- progress ----------------------------------------------------------------------

    /// Fire due timers, start ready steps and settle the run, until nothing changes.
    fn advance(&mut self) {
        for _ in 0..(self.def.steps.len() * 4 + 8) {
            if !self.advance_once() {
                break;
            }
        }
    }

    fn advance_once(&mut self) -> bool {
        match self.run.status {
            RunStatus::Running => {}
            RunStatus::Cancelling => {
                if self
                    .run
                    .cancel
                    .as_ref()
                    .is_some_and(|c| self.now >= c.force_at)
                {
                    self.force_outstanding_kills();
                }
                let before = self.run.status;
                self.finish_cancel();
                return before != self.run.status;
            }
            RunStatus::Compensating => return self.advance_compensation(),
            _ => return false,
        }
        if self.has_budgets() && self.check_budgets() {
            return true;
        }
        let mut changed = false;
        if self.run.deadline.is_some_and(|d| self.now >= d) {
            let ids: Vec<String> = self.def.steps.iter().map(|s| s.id.clone()).collect();
            for id in ids {
                self.stop_step(&id, StepStatus::TimedOut, "the run's timeout passed", true);
            }
            self.fail_run(RunStatus::TimedOut, "the run's timeout passed".into());
            return true;
        }
        // While the budget question is open no step starts; timers (waits, timeouts, expiries)
        // still fire.
        let paused = self.budget_gate_pending();
        let def = self.def;
        for d in &def.steps {
            if self.run.status != RunStatus::Running {
                return true;
            }
            if paused
                && matches!(
                    self.status_of(&d.id),
                    StepStatus::Pending | StepStatus::Retrying
                )
            {
                continue;
            }
            changed |= self.advance_step(d);
        }
        if self.run.status == RunStatus::Running
            && def
                .steps
                .iter()
                .all(|d| self.status_of(&d.id).is_terminal())
        {
            self.complete_run();
            changed = true;
        }
        changed
    }

    fn has_budgets(&self) -> bool {
        self.def.budget.is_some()
            || self
                .def
                .steps
                .iter()
                .any(|d| matches!(&d.action, StepAction::Agent(a) if a.budget.is_some()))
    }

    /// Stop whatever crossed a budget: the run (all its steps) or a running agent step. With
    /// `on_exceed: ask` the agent runs are stopped and the run pauses on a budget gate instead.
    fn check_budgets(&mut self) -> bool {
        let Some(crossing) = budget_crossing(self.run, self.def, self.now) else {
            return false;
        };
        let BudgetCrossing {
            step,
            reason,
            budget,
        } = crossing;
        if budget.on_exceed == OnExceed::Ask {
            self.open_budget_gate(step.as_deref(), reason, &budget);
            return true;
        }
        match step {
            None => {
                let why = format!("run budget exceeded: {reason}");
                for d in &self.def.steps {
                    self.stop_step(&d.id, StepStatus::Cancelled, &why, false);
                }
                self.fail_run(RunStatus::Failed, why);
            }
            Some(id) => {
                self.kill_current_agent(&id, false);
                self.fail_final(&id, format!("step budget exceeded: {reason}"), false);
            }
        }
        true
    }

    fn budget_gate_pending(&self) -> bool {
        budget_gate_pending(self.run)
    }

    /// Pause the run on "continue past the budget?": stop the agent runs in scope (the step,
    /// or every running agent step for the run's budget) and ask.
    fn open_budget_gate(&mut self, step: Option<&str>, reason: String, b: &Budget) {
        let now = self.now;
        let paused: Vec<String> = match step {
            Some(id) => vec![id.to_string()],
            None => self
                .def
                .steps
                .iter()
                .filter(|d| matches!(d.action, StepAction::Agent(_)))
                .filter(|d| self.status_of(&d.id) == StepStatus::Running)
                .map(|d| d.id.clone())
                .collect(),
        };
        for id in &paused {
            self.kill_current_agent(id, false);
            let s = self.st(id);
            s.status = StepStatus::Waiting;
            s.deadline = None;
            s.timer_at = None;
            if let Some(a) = s.agent.as_mut() {
                a.next_poll_at = None;
            }
        }
        let (cost, turns) = match step {
            Some(id) => self.agent_of(id).map_or((0.0, 0), |a| {
                (
                    a.cost_usd + a.previous_attempts_cost_usd,
                    a.turns + a.previous_attempts_turns,
                )
            }),
            None => (
                self.run.cost_usd(),
                self.run
                    .steps
                    .values()
                    .filter_map(|s| s.agent.as_ref())
                    .map(|a| a.turns + a.previous_attempts_turns)
                    .sum(),
            ),
        };
        let scope = step.map_or("the run".to_string(), |s| format!("step {s}"));
        let id = format!(
            "{}.{}.budget{}",
            self.run.id,
            step.unwrap_or("run"),
            self.run.audit_seq
        );
        let message = format!(
            "{scope} crossed its budget: {reason}. Spent so far: ${cost:.4} over {turns} agent \
             turns. Continue past the budget?"
        );
        self.run.budget_gate = Some(BudgetGate {
            approval: ApprovalState {
                id: id.clone(),
                status: ApprovalStatus::Pending,
                message: message.clone(),
                approvers: b.approvers.clone(),
                required: 1,
                requested_at: now,
                expires_at: None,
                decisions: Vec::new(),
                escalated: false,
                kind: ApprovalKind::Budget,
                remind_at: None,
                reminders: 0,
                escalate_at: None,
            },
            step: step.map(str::to_string),
            paused: paused.clone(),
            reason: reason.clone(),
        });
        self.dirty = true;
        let data = json!({"approval_id": id, "kind": ApprovalKind::Budget, "reason": reason,
                          "cost_usd": cost, "turns": turns, "paused": paused,
                          "approvers": b.approvers, "required": 1});
        self.log(
            SYSTEM,
            "budget.exceeded",
            step,
            None,
            format!("{scope} crossed its budget ({reason}); paused until someone decides"),
            data.clone(),
        );
        self.log(
            SYSTEM,
            "approval.requested",
            step,
            None,
            format!("approval {id} requested"),
            data.clone(),
        );
        self.effects.push(Effect::RequestApproval {
            step: step.unwrap_or_default().to_string(),
            approval_id: id,
            message,
            approvers: b.approvers.clone(),
            required: 1,
            expires_at: None,
            slack_channel: None,
            escalation: false,
        });
        self.emit("approval.requested", step, data);
    }

    /// The answer to "continue past the budget?".
    fn on_budget_decision(&mut self, by: &str, status: ApprovalStatus, comment: Option<&str>) {
        let Some(gate) = self.run.budget_gate.clone() else {
            return;
        };
        match status {
            ApprovalStatus::Approved => {
                match &gate.step {
                    Some(id) => self.st(id).budget_grants += 1,
                    None => self.run.budget_grants += 1,
                }
                for id in &gate.paused {
                    let s = self.st(id);
                    let session_id = s.agent.as_ref().and_then(|a| a.session_id.clone());
                    s.status = StepStatus::Pending;
                    // Being stopped at the budget was not a failed attempt.
                    s.attempts_before += 1;
                    s.feedback = Some(StepFeedback {
                        by: by.to_string(),
                        text: format!(
                            "You were stopped because the budget ran out ({}). {by} allowed you \
                             to continue: carry on where you left off.",
                            gate.reason
                        ),
                        session_id,
                    });
                }
                self.log(
                    by,
                    "budget.continued",
                    gate.step.as_deref(),
                    None,
                    format!(
                        "{by} allowed {} to continue past the budget",
                        gate.step.as_deref().unwrap_or("the run")
                    ),
                    json!({"paused": gate.paused}),
                );
            }
            ApprovalStatus::Rejected => {
                let why = format!(
                    "budget exceeded: {}; {by} declined to continue{}",
                    gate.reason,
                    comment.map(|c| format!(": {c}")).unwrap_or_default()
                );
                match &gate.step {
                    Some(id) => self.fail_final(id, format!("step {why}"), false),
                    None => {
                        let why = format!("run {why}");
                        let ids: Vec<String> =
                            self.def.steps.iter().map(|s| s.id.clone()).collect();
                        for id in ids {
                            self.stop_step(&id, StepStatus::Cancelled, &why, false);
                        }
                        self.fail_run(RunStatus::Failed, why);
                    }
                }
            }
            ApprovalStatus::Cancelled => self.cancel_from_gate(by, comment),
            _ => {}
        }
    }

    fn advance_step(&mut self, d: &StepDef) -> bool {
        let now = self.now;
        let Some(s) = self.run.steps.get(&d.id) else {
            self.run.steps.insert(d.id.clone(), StepState::default());
            self.dirty = true;
            return true;
        };
        match s.status {
            StepStatus::Pending => {
                let (mut all_done, mut all_ok, mut any_failed) = (true, true, false);
                for dep in &d.depends_on {
                    let st = self.status_of(dep);
                    all_done &= st.is_terminal();
                    all_ok &= st == StepStatus::Succeeded;
                    any_failed |= st.is_failure();
                }
                if !all_done {
                    return false;
                }
                let run_it = match d.when {
                    When::Success => all_ok,
                    When::Failure => any_failed,
                    When::Always => true,
                };
                if run_it {
                    self.start_attempt(d);
                } else {
                    let s = self.st(&d.id);
                    s.status = StepStatus::Skipped;
                    s.completed_at = Some(now);
                    let why = match d.when {
                        When::Failure => "no dependency failed",
                        _ => "a dependency did not succeed",
                    };
                    self.log(
                        SYSTEM,
                        "step.skipped",
                        Some(&d.id),
                        None,
                        format!("step {} skipped: {why}", d.id),
                        Value::Null,
                    );
                }
                true
            }
            StepStatus::Retrying if s.timer_at.is_some_and(|t| now >= t) => {
                self.start_attempt(d);
                true
            }
            StepStatus::Running => self.advance_running(d),
            StepStatus::Waiting => self.advance_waiting(d),
            _ => false,
        }
    }

    fn advance_running(&mut self, d: &StepDef) -> bool {
        let now = self.now;
        let tick = self.tick;
        let Some(s) = self.run.steps.get(&d.id) else {
            return false;
        };
        if s.deadline.is_some_and(|t| now >= t) {
            let timeout = d
                .timeout
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default();
            self.kill_current_agent(&d.id, false);
            self.fail_attempt(&d.id, format!("timed out after {timeout}"), true);
            return true;
        }
        let attempt = s.attempt;
        match &d.action {
            StepAction::Wait(_) => {
                if s.timer_at.is_some_and(|t| now >= t) {
                    self.st(&d.id).timer_at = None;
                    self.succeed_step(&d.id, Value::Null);
                    return true;
                }
                false
            }
            StepAction::Agent(action) => {
                // Outstanding effects are re-issued only on ticks; skip the clone otherwise.
                if !tick {
                    return false;
                }
                let Some(a) = s.agent.clone() else {
                    return false;
                };
                match a.upstream_run_id {
                    None if tick && s.timer_at.is_some_and(|t| now >= t) => {
                        // The start's outcome was never recorded (a crash, a lost message):
                        // ask again; the adapter finds an existing run by session name first.
                        self.st(&d.id).timer_at = Some(now + REISSUE_AFTER_MS);
                        let spec = self.agent_spec(d, action, attempt, a.session_id.clone());
                        match spec {
                            Ok(spec) => self.effects.push(Effect::StartAgent {
                                step: d.id.clone(),
                                attempt,
                                spec,
                                reissue: true,
                            }),
                            Err(e) => self.fail_attempt(&d.id, e, false),
                        }
                        true
                    }
                    Some(upstream)
                        if tick && poll_lost_at(&a, self.polling()).is_some_and(|t| now >= t) =>
                    {
                        if let Some(ag) = self.st(&d.id).agent.as_mut() {
                            ag.polled_at = Some(now);
                            ag.next_poll_at = Some(now);
                        }
                        self.effects.push(Effect::PollAgent {
                            step: d.id.clone(),
                            attempt,
                            upstream_run_id: upstream,
                            poll: a.polls,
                            delay_ms: 0,
                        });
                        true
                    }
                    _ => false,
                }
            }
            StepAction::Http(_) | StepAction::Notify(_) => {
                if tick && s.effect_pending && s.timer_at.is_some_and(|t| now >= t) {
                    self.st(&d.id).timer_at = Some(now + REISSUE_AFTER_MS);
                    match self.side_effect(d, attempt) {
                        Ok(Some(e)) => self.effects.push(e),
                        Ok(None) => {}
                        Err(e) => self.fail_attempt(&d.id, e, false),
                    }
                    return true;
                }
                false
            }
            StepAction::Approval(_) => false,
        }
    }

    fn advance_waiting(&mut self, d: &StepDef) -> bool {
        let now = self.now;
        let Some(approval) = self.run.steps.get(&d.id).and_then(|s| s.approval.as_ref()) else {
            return false;
        };
        if approval.status != ApprovalStatus::Pending {
            return false;
        }
        let StepAction::Approval(action) = &d.action else {
            return false;
        };
        let approval = approval.clone();
        let mut changed = false;
        if approval.remind_at.is_some_and(|t| now >= t) {
            let every = action.remind_every.as_ref().map(|e| e.millis_i64().max(1));
            let reminder = approval.reminders + 1;
            if let Some(a) = self.st(&d.id).approval.as_mut() {
                a.reminders = reminder;
                a.remind_at = every.map(|e| now + e);
            }
            self.effects.push(Effect::RemindApproval {
                step: d.id.clone(),
                approval_id: approval.id.clone(),
                reminder,
            });
            self.log(
                SYSTEM,
                "approval.reminded",
                Some(&d.id),
                None,
                format!("reminder {reminder} for approval {}", approval.id),
                Value::Null,
            );
            changed = true;
        }
        if approval.escalate_at.is_some_and(|t| now >= t) {
            if approval.escalated {
                if let Some(a) = self.st(&d.id).approval.as_mut() {
                    a.escalate_at = None;
                }
            } else {
                self.escalate(d, action, &approval, approval.expires_at);
            }
            changed = true;
        }
        if approval.expires_at.is_none_or(|t| now < t) {
            return changed;
        }
        let approval = self
            .run
            .steps
            .get(&d.id)
            .and_then(|s| s.approval.clone())
            .unwrap_or(approval);
        let on_expiry = if action.on_expiry == OnExpiry::Escalate && approval.escalated {
            OnExpiry::Reject
        } else {
            action.on_expiry
        };
        match on_expiry {
            OnExpiry::Escalate => {
                let expires_at = action.expires_in.as_ref().map(|e| now + e.millis_i64());
                self.escalate(d, action, &approval, expires_at);
            }
            OnExpiry::Approve => {
                self.expire_approval(&d.id, &approval.id, "approved by policy", "approve");
                self.succeed_step(&d.id, json!({"approved": true, "expired": true}));
            }
            OnExpiry::Reject => {
                self.expire_approval(&d.id, &approval.id, "without a decision", "reject");
                self.fail_final(&d.id, "approval expired without a decision".into(), true);
            }
        }
        true
    }

    /// Ask `escalate_to` too (the original approvers can still decide).
    fn escalate(
        &mut self,
        d: &StepDef,
        action: &ApprovalAction,
        approval: &ApprovalState,
        expires_at: Option<Millis>,
    ) {
        let mut approvers = approval.approvers.clone();
        for a in &action.escalate_to {
            if !approvers.contains(a) {
                approvers.push(a.clone());
            }
        }
        if let Some(a) = self.st(&d.id).approval.as_mut() {
            a.escalated = true;
            a.escalate_at = None;
            a.expires_at = expires_at;
            a.approvers = approvers;
        }
        self.effects.push(Effect::RequestApproval {
            step: d.id.clone(),
            approval_id: approval.id.clone(),
            message: approval.message.clone(),
            approvers: action.escalate_to.clone(),
            required: approval.required,
            expires_at,
            slack_channel: action.slack_channel.clone(),
            escalation: true,
        });
        self.log(
            SYSTEM,
            "approval.escalated",
            Some(&d.id),
            None,
            format!(
                "approval {} escalated to {}",
                approval.id,
                action.escalate_to.join(", ")
            ),
            json!({"escalate_to": action.escalate_to}),
        );
    }

    fn expire_approval(&mut self, step: &str, approval_id: &str, outcome: &str, policy: &str) {
        if let Some(a) = self.st(step).approval.as_mut() {
            a.status = ApprovalStatus::Expired;
        }
        self.close_approval(step, approval_id, ApprovalStatus::Expired);
        self.log(
            SYSTEM,
            "approval.expired",
            Some(step),
            None,
            format!("approval {approval_id} expired {outcome}"),
            json!({"on_expiry": policy}),
        );
    }

    // ----- step transitions --------------------------------------------------------------

    fn tctx(&self) -> TemplateContext<'_> {
        TemplateContext {
            run_id: &self.run.id,
            workflow_id: &self.run.workflow_id,
            inputs: &self.run.inputs,
            steps: &self.run.steps,
        }
    }

    fn render(&self, text: &str) -> Result<String, String> {
        template::render(text, &self.tctx()).map_err(|e| e.to_string())
    }

    fn render_opt(&self, text: &Option<String>) -> Result<Option<String>, String> {
        text.as_ref()
            .map(|t| self.render(t))
            .transpose()
            .map(|o| o.filter(|s| !s.is_empty()))
    }

    fn agent_spec(
        &self,
        d: &StepDef,
        a: &AgentAction,
        attempt: u32,
        session_id: Option<String>,
    ) -> Result<AgentStartSpec, String> {
        let mut message = self.render(&a.message)?;
        if let Some(f) = self.run.steps.get(&d.id).and_then(|s| s.feedback.as_ref()) {
            message.push_str(&format!(
                "\n\nFeedback on the previous attempt (from {}):\n{}",
                f.by, f.text
            ));
        }
        Ok(AgentStartSpec {
            workflow: a.workflow.clone(),
            message,
            max_turns: match (a.max_turns, self.run.max_turns) {
                (Some(step), Some(run)) => Some(step.min(run)),
                (step, run) => step.or(run),
            },
            session_name: session_name(&self.run.id, &d.id, attempt),
            session_id,
            repository_url: self.render_opt(&a.repository_url)?,
            git_branch: self.render_opt(&a.git_branch)?,
            timeout_secs: d
                .timeout
                .as_ref()
                .map(|t| (t.as_millis() / 1000).clamp(AGENT_TIMEOUT_SECS.0, AGENT_TIMEOUT_SECS.1)),
        })
    }

    /// The agent conversation a step continues: the latest captured session of an earlier step
    /// naming the same `session`.
    fn shared_session(&self, d: &StepDef, a: &AgentAction) -> Option<String> {
        let first_agent = self
            .def
            .steps
            .iter()
            .find(|o| matches!(o.action, StepAction::Agent(_)))
            .is_some_and(|o| o.id == d.id);
        let resume = self.run.resume_session_id.clone();
        let Some(key) = a.session.as_ref() else {
            // A run started with `continue_session` continues it in its first agent step.
            return if first_agent { resume } else { None };
        };
        self.def
            .steps
            .iter()
            .filter(|o| o.id != d.id)
            .filter(
                |o| matches!(&o.action, StepAction::Agent(oa) if oa.session.as_ref() == Some(key)),
            )
            .filter_map(|o| {
                let s = self.run.steps.get(&o.id)?;
                Some((
                    s.completed_at.unwrap_or(0),
                    s.agent.as_ref()?.session_id.clone()?,
                ))
            })
            .max_by_key(|(at, _)| *at)
            .map(|(_, id)| id)
            .or(resume)
    }

    fn side_effect(&self, d: &StepDef, attempt: u32) -> Result<Option<Effect>, String> {
        Ok(match &d.action {
            StepAction::Http(h) => Some(self.http_effect(&d.id, attempt, h)?),
            StepAction::Notify(n) => Some(self.notify_effect(&d.id, attempt, n)?),
            _ => None,
        })
    }

    fn http_effect(&self, step: &str, attempt: u32, h: &HttpAction) -> Result<Effect, String> {
        let h = self.render_http(h)?;
        Ok(Effect::CallHttp {
            step: step.to_string(),
            attempt,
            method: h.method,
            url: h.url,
            headers: h.headers,
            body: h.body,
            expect_status: h.expect_status,
        })
    }

    /// An HTTP action with its url, headers and body templates filled in.
    fn render_http(&self, h: &HttpAction) -> Result<HttpAction, String> {
        let ctx = self.tctx();
        Ok(HttpAction {
            url: self.render(&h.url)?,
            headers: h
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render(v)?)))
                .collect::<Result<_, String>>()?,
            body: h
                .body
                .as_ref()
                .map(|b| template::render_value(b, &ctx).map_err(|e| e.to_string()))
                .transpose()?,
            ..h.clone()
        })
    }

    fn notify_effect(&self, step: &str, attempt: u32, n: &NotifyAction) -> Result<Effect, String> {
        Ok(Effect::Notify {
            step: step.to_string(),
            attempt,
            message: self.render(&n.message)?,
            slack_channel: n.slack_channel.clone(),
            webhook_url: n.webhook_url.clone(),
        })
    }

    fn start_attempt(&mut self, d: &StepDef) {
        let now = self.now;
        let (attempt, prev_cost) = {
            let s = self.st(&d.id);
            s.attempt += 1;
            if s.started_at.is_none() {
                s.started_at = Some(now);
            }
            s.attempt_started_at = Some(now);
            s.deadline = d.timeout.as_ref().map(|t| now + t.millis_i64());
            s.timer_at = None;
            s.completed_at = None;
            s.output = None;
            s.effect_pending = false;
            let prev = s
                .agent
                .as_ref()
                .map(|a| a.cost_usd + a.previous_attempts_cost_usd)
                .unwrap_or(0.0);
            let prev_turns = s
                .agent
                .as_ref()
                .map(|a| a.turns + a.previous_attempts_turns)
                .unwrap_or(0);
            (s.attempt, (prev, prev_turns))
        };
        let (prev_cost, prev_turns) = prev_cost;
        self.log(
            SYSTEM,
            "step.started",
            Some(&d.id),
            Some(attempt),
            format!("step {} started (attempt {attempt})", d.id),
            json!({"kind": d.kind().as_str()}),
        );
        let result: Result<(), String> = match &d.action {
            StepAction::Agent(a) => {
                // A retry with feedback (or a budget continuation) continues the conversation of
                // the attempt it redoes.
                let session_id = self
                    .run
                    .steps
                    .get(&d.id)
                    .and_then(|s| s.feedback.as_ref())
                    .and_then(|f| f.session_id.clone())
                    .or_else(|| self.shared_session(d, a));
                match self.agent_spec(d, a, attempt, session_id.clone()) {
                    Ok(spec) => {
                        let s = self.st(&d.id);
                        s.status = StepStatus::Running;
                        s.timer_at = Some(now + REISSUE_AFTER_MS);
                        s.agent = Some(AgentProgress {
                            session_name: spec.session_name.clone(),
                            session_id,
                            max_turns: spec.max_turns,
                            previous_attempts_cost_usd: prev_cost,
                            previous_attempts_turns: prev_turns,
                            ..AgentProgress::default()
                        });
                        self.effects.push(Effect::StartAgent {
                            step: d.id.clone(),
                            attempt,
                            spec,
                            reissue: false,
                        });
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            StepAction::Approval(a) => self.open_approval(d, a, attempt),
            StepAction::Http(_) | StepAction::Notify(_) => match self.side_effect(d, attempt) {
                Ok(Some(effect)) => {
                    let s = self.st(&d.id);
                    s.status = StepStatus::Running;
                    s.effect_pending = true;
                    s.timer_at = Some(now + REISSUE_AFTER_MS);
                    self.effects.push(effect);
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            StepAction::Wait(w) => {
                let s = self.st(&d.id);
                s.status = StepStatus::Running;
                s.timer_at = Some(now + w.duration.millis_i64());
                Ok(())
            }
        };
        if let Err(e) = result {
            self.st(&d.id).status = StepStatus::Running;
            self.fail_attempt(&d.id, format!("could not prepare the step: {e}"), false);
        }
    }

    fn open_approval(
        &mut self,
        d: &StepDef,
        a: &ApprovalAction,
        attempt: u32,
    ) -> Result<(), String> {
        let message = self.render(&a.message)?;
        let now = self.now;
        let id = approval_id(&self.run.id, &d.id, attempt);
        let expires_at = a.expires_in.as_ref().map(|e| now + e.millis_i64());
        let s = self.st(&d.id);
        s.status = StepStatus::Waiting;
        s.approval = Some(ApprovalState {
            id: id.clone(),
            status: ApprovalStatus::Pending,
            message: message.clone(),
            approvers: a.approvers.clone(),
            required: a.required.max(1),
            requested_at: now,
            expires_at,
            decisions: Vec::new(),
            escalated: false,
            kind: ApprovalKind::Step,
            remind_at: a.remind_every.as_ref().map(|e| now + e.millis_i64()),
            reminders: 0,
            escalate_at: a.escalate_after.as_ref().map(|e| now + e.millis_i64()),
        });
        self.effects.push(Effect::RequestApproval {
            step: d.id.clone(),
            approval_id: id.clone(),
            message,
            approvers: a.approvers.clone(),
            required: a.required.max(1),
            expires_at,
            slack_channel: a.slack_channel.clone(),
            escalation: false,
        });
        let data = json!({"approval_id": id, "approvers": a.approvers, "required": a.required});
        self.log(
            SYSTEM,
            "approval.requested",
            Some(&d.id),
            Some(attempt),
            format!("approval {id} requested"),
            data.clone(),
        );
        self.emit("approval.requested", Some(&d.id), data);
        Ok(())
    }

    fn kill_current_agent(&mut self, step: &str, force: bool) {
        let s = self.st(step);
        let attempt = s.attempt;
        if let Some(a) = s.agent.as_mut() {
            a.next_poll_at = None;
            let (upstream, session) = (a.upstream_run_id.clone(), a.session_name.clone());
            self.kill_agent(step, attempt, upstream, session, force);
        }
    }

    /// Ask for an agent run to be stopped, and remember it until the stop is confirmed
    /// ([`Event::AgentKilled`]): the kill effect is performed after the decision is written,
    /// so a crash or an agent-service error can lose it, and [`Cx::reissue_kills`] then
    /// issues it again, however the run ended meanwhile.
    fn kill_agent(
        &mut self,
        step: &str,
        attempt: u32,
        upstream_run_id: Option<String>,
        session_name: String,
        force: bool,
    ) {
        let retry_at = self.now + KILL_RETRY_MS;
        match self
            .run
            .pending_kills
            .iter_mut()
            .find(|k| k.step == step && k.attempt == attempt)
        {
            Some(k) => {
                k.force |= force;
                if k.upstream_run_id.is_none() {
                    k.upstream_run_id.clone_from(&upstream_run_id);
                }
            }
            None => self.run.pending_kills.push(PendingKill {
                step: step.to_string(),
                attempt,
                upstream_run_id: upstream_run_id.clone(),
                session_name: session_name.clone(),
                force,
                retry_at,
                tries: 1,
            }),
        }
        self.dirty = true;
        self.effects.push(Effect::KillAgent {
            step: step.to_string(),
            attempt,
            upstream_run_id,
            session_name,
            force,
        });
    }

    /// On a tick, issue again every kill still unconfirmed after its retry time, backing off;
    /// after [`MAX_KILL_TRIES`] the kill is given up with an audit entry (the agent service
    /// stops runs at their own timeout in the end).
    fn reissue_kills(&mut self) {
        let now = self.now;
        if !self.run.pending_kills.iter().any(|k| k.retry_at <= now) {
            return;
        }
        let mut kept = Vec::new();
        let mut effects = Vec::new();
        let mut abandoned = Vec::new();
        for mut k in std::mem::take(&mut self.run.pending_kills) {
            if k.retry_at > now {
                kept.push(k);
            } else if k.tries >= MAX_KILL_TRIES {
                abandoned.push(k);
            } else {
                k.tries += 1;
                let backoff = KILL_RETRY_MS.saturating_mul(1 << (k.tries - 1).min(5));
                k.retry_at = now + backoff.min(MAX_KILL_RETRY_MS);
                effects.push(Effect::KillAgent {
                    step: k.step.clone(),
                    attempt: k.attempt,
                    upstream_run_id: k.upstream_run_id.clone(),
                    session_name: k.session_name.clone(),
                    force: k.force,
                });
                kept.push(k);
            }
        }
        self.run.pending_kills = kept;
        self.dirty = true;
        self.effects.extend(effects);
        for k in abandoned {
            self.log(
                SYSTEM,
                "agent.kill_abandoned",
                Some(&k.step),
                Some(k.attempt),
                format!(
                    "gave up stopping agent run {} after {} tries; check it on the agent service",
                    k.upstream_run_id.as_deref().unwrap_or(&k.session_name),
                    k.tries
                ),
                json!({"upstream_run_id": k.upstream_run_id, "session_name": k.session_name}),
            );
        }
    }

    fn succeed_step(&mut self, id: &str, output: Value) {
        let now = self.now;
        self.run.completion_seq += 1;
        let seq = self.run.completion_seq;
        let s = self.st(id);
        s.status = StepStatus::Succeeded;
        s.completed_at = Some(now);
        s.deadline = None;
        s.timer_at = None;
        s.error = None;
        s.completion_seq = Some(seq);
        s.output = (!output.is_null()).then_some(output);
        let attempt = s.attempt;
        self.log(
            SYSTEM,
            "step.succeeded",
            Some(id),
            Some(attempt),
            format!("step {id} succeeded"),
            Value::Null,
        );
        self.emit("step.completed", Some(id), json!({"attempt": attempt}));
    }

    /// An attempt failed: retry if the policy allows, else fail the step.
    fn fail_attempt(&mut self, id: &str, error: String, timed_out: bool) {
        let Some(d) = self.def.step(id) else { return };
        let now = self.now;
        let s = self.st(id);
        let tries = s.attempt.saturating_sub(s.attempts_before);
        let max = d.retry.as_ref().map(|r| r.max_attempts).unwrap_or(1);
        if tries < max {
            let delay = d
                .retry
                .as_ref()
                .map(|r| r.delay_before(tries + 1))
                .unwrap_or(0);
            s.status = StepStatus::Retrying;
            s.timer_at = Some(now + delay);
            s.deadline = None;
            s.error = Some(error.clone());
            s.effect_pending = false;
            if let Some(a) = s.agent.as_mut() {
                a.next_poll_at = None;
            }
            let attempt = s.attempt;
            self.log(
                SYSTEM,
                "step.retrying",
                Some(id),
                Some(attempt),
                format!("attempt {attempt} of step {id} failed ({error}); retrying in {delay} ms"),
                json!({"error": error, "delay_ms": delay, "timed_out": timed_out}),
            );
        } else {
            self.fail_final(id, error, timed_out);
        }
    }

    /// The step failed for good (no retry); fail the run unless the step may fail.
    fn fail_final(&mut self, id: &str, error: String, timed_out: bool) {
        let Some(d) = self.def.step(id) else { return };
        let now = self.now;
        let status = if timed_out {
            StepStatus::TimedOut
        } else {
            StepStatus::Failed
        };
        let s = self.st(id);
        s.status = status;
        s.completed_at = Some(now);
        s.deadline = None;
        s.timer_at = None;
        s.effect_pending = false;
        s.error = Some(error.clone());
        if let Some(a) = s.agent.as_mut() {
            a.next_poll_at = None;
        }
        let attempt = s.attempt;
        self.log(
            SYSTEM,
            &format!("step.{status}"),
            Some(id),
            Some(attempt),
            format!("step {id} {status}: {error}"),
            json!({"error": error}),
        );
        self.emit("step.failed", Some(id), json!({"error": error}));
        if !d.continue_on_failure {
            let ids: Vec<String> = self.def.steps.iter().map(|s| s.id.clone()).collect();
            for other in ids {
                if other != id {
                    self.stop_step(&other, StepStatus::Cancelled, "another step failed", false);
                }
            }
            self.fail_run(RunStatus::Failed, format!("step {id} {status}: {error}"));
        }
    }

    // ----- run transitions ---------------------------------------------------------------

    fn complete_run(&mut self) {
        let ctx = self.tctx();
        let mut outputs = serde_json::Map::new();
        for (name, t) in &self.def.outputs {
            let v = template::render(t, &ctx).unwrap_or_default();
            outputs.insert(name.clone(), Value::String(v));
        }
        self.run.outputs = outputs;
        self.end_run(RunStatus::Succeeded, None);
    }

    /// The run failed or timed out: compensate finished steps first, if any can be.
    fn fail_run(&mut self, status: RunStatus, error: String) {
        self.run.error = Some(error);
        self.begin_compensation(status);
    }

    fn compensable(&self) -> Vec<String> {
        let mut steps: Vec<(u64, String)> = self
            .def
            .steps
            .iter()
            .filter(|d| d.compensate.is_some())
            .filter_map(|d| {
                let s = self.run.steps.get(&d.id)?;
                (s.status == StepStatus::Succeeded && s.compensation.is_none())
                    .then(|| (s.completion_seq.unwrap_or(0), d.id.clone()))
            })
            .collect();
        steps.sort_by_key(|s| std::cmp::Reverse(s.0));
        steps.into_iter().map(|(_, id)| id).collect()
    }

    fn begin_compensation(&mut self, final_status: RunStatus) {
        let todo = self.compensable();
        if todo.is_empty() {
            self.end_run(final_status, None);
            return;
        }
        for id in &todo {
            self.st(id).compensation = Some(CompensationState {
                status: CompensationStatus::Pending,
                error: None,
            });
        }
        self.run.status = RunStatus::Compensating;
        self.run.final_status = Some(final_status);
        self.log(
            SYSTEM,
            "run.compensating",
            None,
            None,
            format!("compensating steps, newest first: {}", todo.join(", ")),
            json!({"steps": todo}),
        );
    }

    /// Run compensations one at a time, newest completion first.
    fn advance_compensation(&mut self) -> bool {
        let now = self.now;
        let tick = self.tick;
        let mut order: Vec<(u64, String)> = self
            .run
            .steps
            .iter()
            .filter_map(|(id, s)| {
                let c = s.compensation.as_ref()?;
                matches!(
                    c.status,
                    CompensationStatus::Pending | CompensationStatus::Running
                )
                .then(|| (s.completion_seq.unwrap_or(0), id.clone()))
            })
            .collect();
        order.sort_by_key(|s| std::cmp::Reverse(s.0));
        let Some((_, next)) = order.first().cloned() else {
            let status = self.run.final_status.take().unwrap_or(RunStatus::Failed);
            self.end_run(status, None);
            return true;
        };
        let Some(action) = self.def.step(&next).and_then(|d| d.compensate.clone()) else {
            return false;
        };
        let state = self.run.steps.get(&next).cloned().unwrap_or_default();
        let status = state
            .compensation
            .as_ref()
            .map(|c| c.status)
            .unwrap_or(CompensationStatus::Pending);
        let issue = match status {
            CompensationStatus::Pending => true,
            CompensationStatus::Running => tick && state.timer_at.is_some_and(|t| now >= t),
            _ => false,
        };
        if !issue {
            return false;
        }
        let rendered = match self.render_action(&action) {
            Ok(a) => a,
            Err(e) => {
                self.st(&next).compensation = Some(CompensationState {
                    status: CompensationStatus::Failed,
                    error: Some(e.clone()),
                });
                self.log(
                    SYSTEM,
                    "compensation.failed",
                    Some(&next),
                    None,
                    e,
                    Value::Null,
                );
                return true;
            }
        };
        let s = self.st(&next);
        s.compensation = Some(CompensationState {
            status: CompensationStatus::Running,
            error: None,
        });
        s.timer_at = Some(now + REISSUE_AFTER_MS);
        if status == CompensationStatus::Pending {
            self.log(
                SYSTEM,
                "compensation.started",
                Some(&next),
                None,
                format!("compensating step {next}"),
                json!({"kind": action.kind().as_str()}),
            );
        }
        self.effects.push(Effect::Compensate {
            step: next,
            action: rendered,
        });
        true
    }

    /// A compensation action with its templates filled in.
    fn render_action(&self, action: &StepAction) -> Result<StepAction, String> {
        Ok(match action {
            StepAction::Agent(a) => StepAction::Agent(AgentAction {
                message: self.render(&a.message)?,
                repository_url: self.render_opt(&a.repository_url)?,
                git_branch: self.render_opt(&a.git_branch)?,
                ..a.clone()
            }),
            StepAction::Http(h) => StepAction::Http(self.render_http(h)?),
            StepAction::Notify(n) => StepAction::Notify(NotifyAction {
                message: self.render(&n.message)?,
                ..n.clone()
            }),
            other => other.clone(),
        })
    }

    /// Close a pending budget question (the run ended or is being cancelled).
    fn close_budget_gate(&mut self, status: ApprovalStatus) {
        if !self.budget_gate_pending() {
            return;
        }
        let Some(g) = self.run.budget_gate.as_mut() else {
            return;
        };
        g.approval.status = status;
        let id = g.approval.id.clone();
        let step = g.step.clone().unwrap_or_default();
        self.dirty = true;
        self.close_approval(&step, &id, status);
    }

    fn end_run(&mut self, status: RunStatus, error: Option<String>) {
        self.close_budget_gate(ApprovalStatus::Cancelled);
        if error.is_some() {
            self.run.error = error;
        }
        self.run.status = status;
        self.run.completed_at = Some(self.now);
        self.run.final_status = None;
        let event = match status {
            RunStatus::Succeeded => "run.completed",
            RunStatus::Cancelled => "run.cancelled",
            _ => "run.failed",
        };
        let actor = match (status, &self.run.cancel) {
            (RunStatus::Cancelled, Some(c)) => c.by.clone(),
            _ => SYSTEM.to_string(),
        };
        let data = json!({"status": status, "error": self.run.error, "outputs": self.run.outputs});
        self.log(
            &actor,
            event,
            None,
            None,
            format!(
                "run {status}{}",
                self.run
                    .error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            data.clone(),
        );
        self.emit(event, None, data);
    }
}

/// The deterministic agent session name of one step attempt: the intent record that lets a
/// restarted poller find the run it may already have started.
pub fn session_name(run_id: &str, step: &str, attempt: u32) -> String {
    format!("flowgate-{run_id}-{step}-{attempt}")
}

/// Approval ids are deterministic per step attempt so repeated requests name the same gate.
/// They start with the run id (which has no `.`), so a decision finds its run in one read.
pub fn approval_id(run_id: &str, step: &str, attempt: u32) -> String {
    format!("{run_id}.{step}.{attempt}")
}

/// The run an approval id belongs to (see [`approval_id`]); `None` for a malformed id.
pub fn approval_run_id(approval_id: &str) -> Option<&str> {
    let (run, rest) = approval_id.split_once('.')?;
    (!run.is_empty() && !rest.is_empty()).then_some(run)
}

/// The workflow's polling policy, or the default, without copying it (decisions are hot).
fn polling_of(def: &WorkflowDefinition) -> &PollingPolicy {
    static DEFAULT: std::sync::LazyLock<PollingPolicy> =
        std::sync::LazyLock::new(PollingPolicy::default);
    def.polling.as_ref().unwrap_or(&DEFAULT)
}

/// When a poll chain is presumed lost. A live chain writes when it sees progress and at least
/// once per heartbeat (at its first poll after the heartbeat passes), so nothing written for a
/// heartbeat plus the longest interval (plus slack) means the chain's message was lost.
fn poll_lost_at(a: &AgentProgress, polling: &PollingPolicy) -> Option<Millis> {
    let polled = a.polled_at?;
    let due = a.next_poll_at.unwrap_or(polled).max(polled);
    Some(due.max(polled + POLL_HEARTBEAT_MS) + polling.max.millis_i64() + POLL_LOST_AFTER_MS)
}

/// `roots` and every step that depends on one of them, directly or not (roots first).
fn with_downstream(def: &WorkflowDefinition, mut steps: Vec<String>) -> Vec<String> {
    let mut i = 0;
    while i < steps.len() {
        let id = steps[i].clone();
        for d in &def.steps {
            if d.depends_on.contains(&id) && !steps.contains(&d.id) {
                steps.push(d.id.clone());
            }
        }
        i += 1;
    }
    steps
}

/// The state of a step that runs again (manual retry, retry with feedback): attempts keep
/// counting so every attempt's agent session name stays unique, the retry policy counts from
/// here, and the agent spend of earlier attempts stays for the step's budget.
fn fresh_state(prev: &StepState) -> StepState {
    let (cost, turns) = prev.agent.as_ref().map_or((0.0, 0), |a| {
        (
            a.cost_usd + a.previous_attempts_cost_usd,
            a.turns + a.previous_attempts_turns,
        )
    });
    StepState {
        attempt: prev.attempt,
        attempts_before: prev.attempt,
        agent: (cost > 0.0 || turns > 0).then(|| AgentProgress {
            previous_attempts_cost_usd: cost,
            previous_attempts_turns: turns,
            ..AgentProgress::default()
        }),
        ..StepState::default()
    }
}

/// A budget after `grants` approvals to continue: each allows one more budget's worth.
fn scaled(b: &Budget, grants: u32) -> Budget {
    if grants == 0 {
        return b.clone();
    }
    let k = f64::from(grants) + 1.0;
    Budget {
        max_cost_usd: b.max_cost_usd.map(|c| c * k),
        max_turns: b.max_turns.map(|t| t.saturating_mul(grants + 1)),
        max_duration: b.max_duration.as_ref().map(|d| {
            crate::duration::DurationSpec::from_millis(
                d.as_millis().saturating_mul(u64::from(grants) + 1),
            )
        }),
        ..b.clone()
    }
}

/// The run is paused on "continue past the budget?".
fn budget_gate_pending(run: &Run) -> bool {
    run.budget_gate
        .as_ref()
        .is_some_and(|g| g.approval.status == ApprovalStatus::Pending)
}

/// Take a poll's turns, tokens and cost into the agent's recorded progress (they only grow).
fn take_progress(a: &mut AgentProgress, obs: &AgentObservation) {
    a.turns = obs.turns.max(a.turns);
    a.tokens = obs.tokens.max(a.tokens);
    a.cost_usd = obs.cost_usd.max(a.cost_usd);
}

/// Take what a poll saw of an agent's progress ([`take_progress`], its turn limit and phase)
/// into `a`: what a recorded poll keeps, and what a read of the run shows live
/// (`runtime::observe_live`) without recording it.
pub fn take_observed(a: &mut AgentProgress, obs: &AgentObservation) {
    take_progress(a, obs);
    if obs.max_turns.is_some() {
        a.max_turns = obs.max_turns;
    }
    a.phase = obs.phase.clone().or(a.phase.take());
}

/// A budget a run has crossed: the run's (`step` = None) or a running agent step's, scaled by
/// the grants so far, and why.
struct BudgetCrossing {
    step: Option<String>,
    reason: String,
    budget: Budget,
}

/// The first budget `run` has crossed at `now`, the run's before its steps'; none while a
/// budget gate is open.
fn budget_crossing(run: &Run, def: &WorkflowDefinition, now: Millis) -> Option<BudgetCrossing> {
    if budget_gate_pending(run) {
        return None;
    }
    if let Some(b) = &def.budget {
        let b = scaled(b, run.budget_grants);
        let turns = run
            .steps
            .values()
            .filter_map(|s| s.agent.as_ref())
            .map(|a| a.turns + a.previous_attempts_turns)
            .sum();
        let elapsed = run.started_at.map(|t| now - t);
        if let Some(reason) = over_budget(&b, run.cost_usd(), turns, elapsed) {
            return Some(BudgetCrossing {
                step: None,
                reason,
                budget: b,
            });
        }
    }
    for d in &def.steps {
        let StepAction::Agent(AgentAction {
            budget: Some(b), ..
        }) = &d.action
        else {
            continue;
        };
        let Some(s) = run.steps.get(&d.id) else {
            continue;
        };
        if s.status != StepStatus::Running {
            continue;
        }
        let (cost, turns) = s.agent.as_ref().map_or((0.0, 0), |a| {
            (
                a.cost_usd + a.previous_attempts_cost_usd,
                a.turns + a.previous_attempts_turns,
            )
        });
        let elapsed = s.started_at.map(|t| now - t);
        let b = scaled(b, s.budget_grants);
        if let Some(reason) = over_budget(&b, cost, turns, elapsed) {
            return Some(BudgetCrossing {
                step: Some(d.id.clone()),
                reason,
                budget: b,
            });
        }
    }
    None
}

/// Which cap a spend crosses, in words, if any.
fn over_budget(b: &Budget, cost: f64, turns: u32, elapsed: Option<Millis>) -> Option<String> {
    if let Some(max) = b.max_cost_usd
        && cost > max
    {
        return Some(format!("agent cost ${cost:.4} is over the ${max:.4} cap"));
    }
    if let Some(max) = b.max_turns
        && turns > max
    {
        return Some(format!("{turns} agent turns is over the cap of {max}"));
    }
    if let (Some(max), Some(elapsed)) = (&b.max_duration, elapsed)
        && elapsed >= max.millis_i64()
    {
        return Some(format!(
            "{} s of wall-clock time reached the {max} cap",
            elapsed / 1000
        ));
    }
    None
}

/// The earliest moment a `Tick` must be delivered for a timer (retry, timeout, wait, expiry,
/// cancel grace, run deadline, wall-clock budgets). Polls and re-issues have their own messages
/// and are not here.
pub fn next_timer(run: &Run, def: &WorkflowDefinition) -> Option<Millis> {
    let mut t: Option<Millis> = None;
    let mut take = |x: Option<Millis>| {
        if let Some(x) = x {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
    };
    match run.status {
        RunStatus::Running => {
            take(run.deadline);
            let paused = run
                .budget_gate
                .as_ref()
                .is_some_and(|g| g.approval.status == ApprovalStatus::Pending);
            // Budgets are checked again once the question is answered; a granted budget ends
            // later.
            let budget_end = |b: &Option<Budget>, grants: u32, from: Option<Millis>| {
                let b = scaled(b.as_ref()?, grants);
                Some(from? + b.max_duration.as_ref()?.millis_i64())
            };
            if !paused {
                take(budget_end(&def.budget, run.budget_grants, run.started_at));
                for d in &def.steps {
                    if let StepAction::Agent(a) = &d.action
                        && a.budget.is_some()
                        && let Some(s) = run.steps.get(&d.id)
                        && s.status == StepStatus::Running
                    {
                        take(budget_end(&a.budget, s.budget_grants, s.started_at));
                    }
                }
            }
            for s in run.steps.values() {
                match s.status {
                    StepStatus::Retrying if !paused => take(s.timer_at),
                    StepStatus::Running => {
                        take(s.deadline);
                        if s.agent.is_none() && !s.effect_pending {
                            take(s.timer_at); // a wait step ending
                        }
                    }
                    StepStatus::Waiting => {
                        if let Some(a) = s
                            .approval
                            .as_ref()
                            .filter(|a| a.status == ApprovalStatus::Pending)
                        {
                            take(a.expires_at);
                            take(a.remind_at);
                            take(a.escalate_at);
                        }
                    }
                    _ => {}
                }
            }
        }
        RunStatus::Cancelling => take(run.cancel.as_ref().map(|c| c.force_at)),
        _ => {}
    }
    t
}

/// When the run next needs attention: its next timer, or the moment an outstanding effect is
/// presumed lost. The sweeper re-enqueues runs past this.
pub fn wake_at(run: &Run, def: &WorkflowDefinition) -> Option<Millis> {
    wake_after(run, def, next_timer(run, def))
}

/// [`wake_at`] given the run's [`next_timer`], already computed.
fn wake_after(run: &Run, def: &WorkflowDefinition, timer: Option<Millis>) -> Option<Millis> {
    let polling = polling_of(def);
    let mut t = timer;
    let mut take = |x: Option<Millis>| {
        if let Some(x) = x {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
    };
    match run.status {
        RunStatus::Running => {
            for s in run.steps.values() {
                if s.status != StepStatus::Running {
                    continue;
                }
                if let Some(a) = &s.agent {
                    if a.upstream_run_id.is_none() {
                        take(s.timer_at);
                    } else {
                        take(poll_lost_at(a, polling));
                    }
                } else if s.effect_pending {
                    take(s.timer_at);
                }
            }
        }
        RunStatus::Compensating => {
            let running = run.steps.values().find(|s| {
                s.compensation
                    .as_ref()
                    .is_some_and(|c| c.status == CompensationStatus::Running)
            });
            match running {
                Some(s) => take(s.timer_at),
                None => take(Some(run.updated_at)),
            }
        }
        // A queued run needs nobody until a slot frees; the admission pump, not the sweeper,
        // looks after it.
        RunStatus::Pending if !run.queued => take(Some(run.created_at)),
        _ => {}
    }
    // Unconfirmed kills, whatever the run's status (a finished run stays due for them).
    for k in &run.pending_kills {
        take(Some(k.retry_at));
    }
    t
}
