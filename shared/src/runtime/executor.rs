//! The executor: one work message in, engine decisions written, effects performed.
//!
//! Order matters for the invariants: the run is read (strongly consistent), the engine decides,
//! the new state is written conditionally on the version read, and only then are the effects
//! performed. A crash anywhere leaves either the old state (the message comes back and is
//! decided again) or the new state with effects not yet done (the engine re-issues them from
//! `wake_at` on a tick, which the sweeper guarantees).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tracing::{Instrument, debug, error, field, info_span, warn};

use super::agent::AgentApi;
use super::clock::Clock;
use super::error::ExecError;
use crate::definition::{StepAction, WorkflowDefinition};
use crate::engine::{AgentObservation, Effect, Event, Rejection, decide_mut};
use crate::model::{AgentRunStatus, Millis, Run, StepStatus};
use crate::notify::Notifier;
use crate::ports::{
    MAX_DELAY, MAX_HAND_BACK, REDELIVER_MAX_RECEIVES, RunStore, WorkMessage, WorkQueue,
    WorkflowStore,
};

/// Events one message may process inline (the first plus the outcomes of effects it caused).
/// More are handed to the queue as `WorkMessage::Event`s, so one message cannot keep a Lambda
/// busy indefinitely.
pub const MAX_INLINE_EVENTS: usize = 64;

/// Conditional writes tried per event before giving up with [`ExecError::Contention`] (the
/// message is then retried as a whole).
pub const MAX_WRITE_ATTEMPTS: u32 = 8;

/// Budget of one HTTP call made for an `http` or `notify` step (connect to last byte).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Pinned definitions kept in memory; a warm Lambda sees few distinct (workflow, version) pairs.
const DEFINITION_CACHE_SIZE: usize = 256;

/// How the message being handled was delivered, for a consumer that can hand it back to the
/// queue ([`WorkQueue::redeliver`]) instead of acking it: the Lambda poller, `flowgate serve`'s
/// workers.
#[derive(Debug, Clone, Copy)]
pub struct Receipt<'a> {
    /// The delivery's receipt handle.
    pub receipt: &'a str,
    /// How many times the message was received, this time included (SQS's
    /// `ApproximateReceiveCount`).
    pub receive_count: u32,
}

/// What became of a handled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Done with: ack (delete) it.
    Done,
    /// Handed back to the queue to come again (a poll chain waiting for its next poll): the
    /// consumer must not ack it.
    HandedBack,
}

/// The poll chain a poll message belongs to.
#[derive(Debug, Clone, Copy)]
struct PollChain<'a> {
    run_id: &'a str,
    step: &'a str,
    attempt: u32,
    upstream_run_id: &'a str,
    poll: u32,
}

impl PollChain<'_> {
    /// The delay of the next poll when a decision's only effect is this chain's next poll
    /// (the same message, unchanged, would carry it).
    fn next_delay(&self, effects: &[Effect]) -> Option<Duration> {
        match effects {
            [
                Effect::PollAgent {
                    step,
                    attempt,
                    upstream_run_id,
                    poll,
                    delay_ms,
                },
            ] if step == self.step
                && *attempt == self.attempt
                && upstream_run_id == self.upstream_run_id
                && *poll == self.poll =>
            {
                Some(Duration::from_millis(*delay_ms).min(MAX_DELAY))
            }
            _ => None,
        }
    }
}

/// Performs work messages: see the module docs for the order of reads, writes and effects.
pub struct Executor {
    pub(super) store: Arc<dyn RunStore>,
    pub(super) workflows: Arc<dyn WorkflowStore>,
    pub(super) queue: Arc<dyn WorkQueue>,
    pub(super) agent: Arc<dyn AgentApi>,
    /// The client of `http` and `notify` steps, built on first use: most processes never run
    /// one, and building a client loads the system's root certificates (milliseconds of a cold
    /// start, and most of the cost of a simulated process).
    http: OnceLock<reqwest::Client>,
    pub(super) clock: Arc<dyn Clock>,
    /// Slack and outbound webhooks; notification effects are only logged without one.
    pub(super) notifier: Option<Arc<Notifier>>,
    /// Pinned definitions by (workflow id, version). Versions are immutable, so entries never
    /// go stale.
    definitions: Mutex<HashMap<(String, u64), Arc<WorkflowDefinition>>>,
    /// Workflow ids some stored workflow's `workflow_completed` trigger names, and when that
    /// was read (see [`super::chain::CHAIN_SOURCES_TTL_MS`]).
    pub(super) chain_sources: Mutex<Option<(Millis, Arc<std::collections::HashSet<String>>)>>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What the run looked like before a decision, for the session bookkeeping.
#[derive(Debug, Clone)]
pub(super) struct Before {
    /// Step id → the agent session id it had.
    pub sessions: BTreeMap<String, Option<String>>,
}

impl Before {
    pub(super) fn of(run: &Run) -> Self {
        Before {
            sessions: run
                .steps
                .iter()
                .map(|(id, s)| {
                    (
                        id.clone(),
                        s.agent.as_ref().and_then(|a| a.session_id.clone()),
                    )
                })
                .collect(),
        }
    }
}

/// What reading, deciding and writing an event came to.
#[derive(Debug)]
enum ApplyOutcome {
    Applied(Applied),
    Missing,
    Rejected(Rejection),
}

/// Why [`Executor::command`] did not apply a command. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("there is no run {0}; check the id")]
    NotFound(String),
    /// The engine refused the command in the run's current state.
    #[error(transparent)]
    Rejected(Rejection),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// A decision that was written (or needed no write), with the effects still to perform.
#[derive(Debug)]
pub(super) struct Applied {
    pub run: Run,
    pub def: Arc<WorkflowDefinition>,
    pub effects: Vec<Effect>,
    pub before: Before,
    /// The effects come from the write this handler just made (not from a queued `Perform`
    /// message, which may be delivered more than once): a first agent start needs no look-up.
    pub fresh: bool,
}

impl Executor {
    /// An executor over the given ports. `http` and `notify` steps get a client that gives up
    /// after [`HTTP_TIMEOUT`], built when the first one runs (see [`Executor::with_http`]).
    pub fn new(
        store: Arc<dyn RunStore>,
        workflows: Arc<dyn WorkflowStore>,
        queue: Arc<dyn WorkQueue>,
        agent: Arc<dyn AgentApi>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ExecError> {
        Ok(Executor {
            store,
            workflows,
            queue,
            agent,
            http: OnceLock::new(),
            clock,
            notifier: None,
            definitions: Mutex::new(HashMap::new()),
            chain_sources: Mutex::new(None),
        })
    }

    /// Use `http` for `http` and `notify` steps (e.g. with a proxy or other timeouts).
    pub fn with_http(self, http: reqwest::Client) -> Self {
        let _ = self.http.set(http);
        self
    }

    /// The client of `http` and `notify` steps; an error names why it could not be built
    /// (no TLS backend), which fails the step that needed it.
    pub(super) fn http(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the HTTP client cannot be built: {e}"))?;
        Ok(self.http.get_or_init(|| client))
    }

    /// The record store beside the runs (the notifier's): concurrency groups, chaining.
    pub(super) fn records(&self) -> Option<Arc<dyn crate::ports::RecordStore>> {
        self.notifier
            .as_ref()
            .map(|n| n.webhooks().records().clone())
    }

    /// Send notification effects (approval messages, lifecycle events) through `notifier`,
    /// as queued deliveries.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn notifier(&self) -> Option<&Arc<Notifier>> {
        self.notifier.as_ref()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Handle one work message. `Ok` means the message is done (including stale messages,
    /// which are dropped); a retryable error means it should be delivered again; any other
    /// error means retrying cannot help (log it and drop the message: the run's `wake_at` and
    /// the sweeper keep the run recoverable).
    pub async fn handle(&self, message: &WorkMessage) -> Result<(), ExecError> {
        self.handle_delivered(message, None).await.map(|_| ())
    }

    /// [`Executor::handle`] for a consumer that can hand the message back to the queue. A
    /// wake-up for a timer not yet due is handed back until it is (see `wake`). A
    /// poll whose chain goes on unchanged (the next poll is for the same chain: nothing was
    /// recorded that starts a new one) hands its own message back for the next interval,
    /// one `ChangeMessageVisibility` on SQS instead of a `SendMessage` and the event source
    /// mapping's `DeleteMessage`, and answers [`Handled::HandedBack`]. If the hand-back fails,
    /// or the message was received [`REDELIVER_MAX_RECEIVES`] times, the next poll is sent as
    /// a new message instead and the message is done.
    pub async fn handle_delivered(
        &self,
        message: &WorkMessage,
        receipt: Option<Receipt<'_>>,
    ) -> Result<Handled, ExecError> {
        let done = |r: Result<(), ExecError>| r.map(|()| Handled::Done);
        match message {
            WorkMessage::Event { run_id, event } => {
                let span = info_span!(
                    "work",
                    kind = "event",
                    run_id = %run_id,
                    event = event.name(),
                    step_id = field::Empty,
                    attempt = field::Empty,
                );
                if let Some((step, attempt)) = event_step(event) {
                    span.record("step_id", step);
                    if let Some(attempt) = attempt {
                        span.record("attempt", attempt);
                    }
                }
                done(
                    self.process(run_id, event.clone(), None)
                        .instrument(span)
                        .await,
                )
            }
            WorkMessage::Perform { run_id, effects } => {
                let span =
                    info_span!("work", kind = "perform", run_id = %run_id, effects = effects.len());
                done(
                    self.perform_deferred(run_id, effects)
                        .instrument(span)
                        .await,
                )
            }
            WorkMessage::Deliver {
                run_id,
                delivery,
                attempt,
                not_before,
            } => {
                let span = info_span!(
                    "work",
                    kind = "deliver",
                    run_id = %run_id,
                    delivery = delivery.name(),
                    attempt,
                );
                done(
                    self.deliver(run_id, delivery, *attempt, *not_before)
                        .instrument(span)
                        .await,
                )
            }
            WorkMessage::Wake { run_id, at } => {
                let span = info_span!("work", kind = "wake", run_id = %run_id, at = ?at);
                self.wake(run_id, *at, receipt).instrument(span).await
            }
            WorkMessage::Poll {
                run_id,
                step,
                attempt,
                upstream_run_id,
                poll,
            } => {
                let span = info_span!(
                    "work",
                    kind = "poll",
                    run_id = %run_id,
                    step_id = %step,
                    attempt,
                    poll,
                    upstream_run_id = %upstream_run_id,
                );
                let chain = PollChain {
                    run_id,
                    step,
                    attempt: *attempt,
                    upstream_run_id,
                    poll: *poll,
                };
                self.poll(chain, receipt).instrument(span).await
            }
        }
    }

    /// A wake-up. One sent for a timer further away than the queue can delay (15 minutes)
    /// comes early: with a `receipt` it is handed back until the timer is due, for up to
    /// [`MAX_HAND_BACK`] (11 h) at a time, so a 24-hour approval timeout costs three deliveries
    /// rather than 96 hops; otherwise it is re-sent, each hop waiting `min(at - now, 900 s)`.
    async fn wake(
        &self,
        run_id: &str,
        at: Option<Millis>,
        receipt: Option<Receipt<'_>>,
    ) -> Result<Handled, ExecError> {
        let now = self.clock.now_ms();
        if let Some(at) = at
            && now < at
        {
            let wait = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
            if self.hand_back(receipt, wait.min(MAX_HAND_BACK)).await {
                debug!(
                    wait_ms = wait.as_millis() as u64,
                    "timer not due yet; wake-up handed back"
                );
                return Ok(Handled::HandedBack);
            }
            let delay = delay_until(now, at);
            debug!(
                delay_ms = delay.as_millis() as u64,
                "timer not due yet; re-sending the wake-up"
            );
            let message = WorkMessage::Wake {
                run_id: run_id.to_string(),
                at: Some(at),
            };
            self.queue.send(&message, delay).await?;
            return Ok(Handled::Done);
        }
        self.process(run_id, Event::Tick, None)
            .await
            .map(|()| Handled::Done)
    }

    /// A status poll. Polls that no longer match the step's live poll chain (another attempt,
    /// another poll number, the step finished) are dropped without calling the agent service.
    ///
    /// Agent errors: a retryable one (timeout, 5xx, 429) fails the message so it is delivered
    /// again after the visibility timeout. A 404 means the agent run is gone: it is reported to
    /// the engine as a failed agent run (so the step's retry policy applies). Any other error
    /// (a wrong API key, a malformed answer) is returned as non-retryable: the poll is dropped
    /// and the step's lost-poll timer (`wake_at`) re-issues a poll a few minutes later, so
    /// fixing the configuration resumes polling without failing anyone's step.
    ///
    /// With a `receipt`, a poll whose chain goes on unchanged hands its message back (see
    /// [`Executor::handle_delivered`]).
    async fn poll(
        &self,
        chain: PollChain<'_>,
        receipt: Option<Receipt<'_>>,
    ) -> Result<Handled, ExecError> {
        let PollChain {
            run_id,
            step,
            attempt,
            upstream_run_id,
            poll,
        } = chain;
        let current = |run: &Run| {
            run.steps
                .get(step)
                .filter(|s| s.attempt == attempt && s.status == StepStatus::Running)
                .and_then(|s| s.agent.as_ref())
                .is_some_and(|a| {
                    a.polls == poll && a.upstream_run_id.as_deref() == Some(upstream_run_id)
                })
        };
        // Every poll reads its run, so it reads the cheap way (`get_run_relaxed`); a version
        // that may be behind can only make the poll look stale, which a consistent read then
        // confirms before the poll is dropped. A decision made from it is written conditionally
        // on the version read, and decided again if that was not the latest.
        let run = match self.store.get_run_relaxed(run_id).await? {
            Some(run) if current(&run) => run,
            _ => match self.store.get_run(run_id).await? {
                Some(run) if current(&run) => run,
                Some(_) => {
                    debug!("stale poll (the step moved on); dropping it without calling the agent");
                    return Ok(Handled::Done);
                }
                None => {
                    debug!("the run does not exist; dropping the poll");
                    return Ok(Handled::Done);
                }
            },
        };
        let def = self.definition(&run).await?;
        let Some(workflow) = agent_workflow(&def, step) else {
            warn!(
                "poll for a step that is not an agent step in the pinned definition; dropping it"
            );
            return Ok(Handled::Done);
        };
        let observation = match self.agent.observe(&workflow, upstream_run_id).await {
            Ok(observation) => observation,
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "agent status poll failed; the message will be retried");
                return Err(e.into());
            }
            Err(e) if e.is_not_found() => {
                warn!(error = %e, "the agent service no longer knows this run; reporting it failed");
                AgentObservation {
                    status: Some(AgentRunStatus::Failed),
                    error: Some(format!(
                        "the agent service no longer knows run {upstream_run_id} (HTTP 404)"
                    )),
                    ..AgentObservation::default()
                }
            }
            Err(e) => {
                error!(
                    error = %e,
                    "agent status poll failed and retrying will not help; dropping it (the \
                     step's lost-poll timer re-issues a poll later)"
                );
                return Err(e.into());
            }
        };
        let event = Event::AgentObserved {
            step: step.to_string(),
            attempt,
            poll,
            observation,
        };
        let Some(applied) = self.apply(run_id, &event, Some(run)).await? else {
            return Ok(Handled::Done);
        };
        if let Some(delay) = chain.next_delay(&applied.effects)
            && self.hand_back(receipt, delay).await
        {
            debug!(
                delay_ms = delay.as_millis() as u64,
                "poll chain goes on; message handed back for the next poll"
            );
            self.record_sessions(&applied).await;
            return Ok(Handled::HandedBack);
        }
        self.carry_on(run_id, applied).await.map(|()| Handled::Done)
    }

    /// Hand the message of `receipt` back to the queue for `delay`; false when there is no
    /// receipt, the message was received [`REDELIVER_MAX_RECEIVES`] times (SQS would soon move
    /// it to the dead-letter queue), or the queue refused, and the caller sends what comes
    /// next as a new message.
    async fn hand_back(&self, receipt: Option<Receipt<'_>>, delay: Duration) -> bool {
        let Some(receipt) = receipt.filter(|r| r.receive_count < REDELIVER_MAX_RECEIVES) else {
            return false;
        };
        match self.queue.redeliver(receipt.receipt, delay).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "cannot hand the message back; sending what comes next anew");
                false
            }
        }
    }

    /// Perform an applied decision's effects and carry on with their outcomes (as a message's
    /// own event would be); the first failure, the effects' before the outcomes'.
    pub(super) async fn carry_on(&self, run_id: &str, applied: Applied) -> Result<(), ExecError> {
        let (next, failed) = self.perform_all(&applied).await;
        let drained = self.drain(run_id, next.into(), Some(applied.run), 1).await;
        failed.map_or(drained, Err)
    }

    /// Apply `first`, perform its effects, apply their outcomes, and so on, up to
    /// [`MAX_INLINE_EVENTS`]. Effect failures that a redelivery can repair (a queue send that
    /// did not go out) are returned after every other effect was tried.
    async fn process(
        &self,
        run_id: &str,
        first: Event,
        preloaded: Option<Run>,
    ) -> Result<(), ExecError> {
        self.drain(run_id, VecDeque::from([first]), preloaded, 0)
            .await
    }

    /// Apply a command (cancel, feedback, retry, rollback, an approval decision) now, on behalf
    /// of a caller waiting for the answer, then perform its effects as a work message would.
    ///
    /// Unlike [`Executor::handle`], a refused command is returned
    /// ([`CommandError::Rejected`]) so the caller can tell the user why, and nothing is written.
    /// Once the command is written it stands: trouble performing its effects afterwards is
    /// logged, not returned, because the run's `wake_at` (and the sweeper) re-issue them.
    pub async fn command(&self, run_id: &str, event: Event) -> Result<Run, CommandError> {
        let span = info_span!("command", run_id = %run_id, event = event.name());
        async {
            let applied = match self.try_apply(run_id, &event, None).await? {
                ApplyOutcome::Applied(applied) => applied,
                ApplyOutcome::Missing => return Err(CommandError::NotFound(run_id.to_string())),
                ApplyOutcome::Rejected(rejection) => return Err(CommandError::Rejected(rejection)),
            };
            let run = applied.run.clone();
            if let Err(e) = self.carry_on(run_id, applied).await {
                warn!(error = %e, "the command was recorded but an effect failed; the run's wake-up timer re-issues it");
            }
            Ok(run)
        }
        .instrument(span)
        .await
    }

    /// Apply a command now and write it, but leave its effects to a queued
    /// [`WorkMessage::Perform`]: for callers that must answer fast (an approval click must be
    /// answered within Slack's 3 s), so the request path is one conditional write and one
    /// enqueue. If the enqueue fails the command still stands; the run's `wake_at` and the
    /// sweeper re-issue what its effects would have started.
    pub async fn command_deferred(&self, run_id: &str, event: Event) -> Result<Run, CommandError> {
        let span = info_span!("command", run_id = %run_id, event = event.name(), deferred = true);
        async {
            let applied = match self.try_apply(run_id, &event, None).await? {
                ApplyOutcome::Applied(applied) => applied,
                ApplyOutcome::Missing => return Err(CommandError::NotFound(run_id.to_string())),
                ApplyOutcome::Rejected(rejection) => return Err(CommandError::Rejected(rejection)),
            };
            if !applied.effects.is_empty() {
                let message = WorkMessage::Perform {
                    run_id: run_id.to_string(),
                    effects: applied.effects.clone(),
                };
                if let Err(e) = self.queue.send(&message, Duration::ZERO).await {
                    warn!(error = %e, "the command was recorded but its effects were not queued; the run's wake-up timer re-issues them");
                }
            }
            self.record_sessions(&applied).await;
            Ok(applied.run)
        }
        .instrument(span)
        .await
    }

    /// The work loop behind [`Executor::process`]; `handled` counts events already applied
    /// inline before `work` (their effects' outcomes are in `work`).
    async fn drain(
        &self,
        run_id: &str,
        mut work: VecDeque<Event>,
        mut preloaded: Option<Run>,
        mut handled: usize,
    ) -> Result<(), ExecError> {
        let mut deferred: Option<ExecError> = None;
        while let Some(event) = work.pop_front() {
            if handled >= MAX_INLINE_EVENTS {
                work.push_front(event);
                debug!(
                    remaining = work.len(),
                    "inline event budget spent; queueing the rest"
                );
                self.enqueue_events(run_id, work).await?;
                break;
            }
            handled += 1;
            let applied = match self.apply(run_id, &event, preloaded.take()).await {
                Ok(Some(applied)) => applied,
                Ok(None) => continue,
                Err(e) if handled > 1 => {
                    // An effect's outcome could not be recorded. The message that caused it
                    // would not bring it back (its own event is already applied), so hand the
                    // outcome and the rest of the work to the queue.
                    warn!(event = event.name(), error = %e, "could not apply an effect's outcome; queueing it");
                    work.push_front(event);
                    if let Err(queue_error) = self.enqueue_events(run_id, work).await {
                        warn!(error = %queue_error, "could not queue it either; the run's wake-up timer re-issues the effect");
                        return Err(e);
                    }
                    return deferred.map_or(Ok(()), Err);
                }
                Err(e) => return Err(e),
            };
            let (next, failed) = self.perform_all(&applied).await;
            work.extend(next);
            if let Some(e) = failed {
                deferred.get_or_insert(e);
            }
            // The next inline event starts from the state just written instead of reading it
            // back; if another writer got in between, the conditional write fails and `apply`
            // re-reads.
            preloaded = Some(applied.run);
        }
        deferred.map_or(Ok(()), Err)
    }

    /// Record sessions and perform an applied decision's effects in order: the events their
    /// outcomes produced, and the first failure (the others are logged).
    pub(super) async fn perform_all(&self, applied: &Applied) -> (Vec<Event>, Option<ExecError>) {
        self.record_sessions(applied).await;
        let mut next = Vec::new();
        let mut failed = None;
        for effect in &applied.effects {
            let span = effect_span(effect);
            match self.perform(applied, effect).instrument(span).await {
                Ok(Some(event)) => next.push(event),
                Ok(None) => {}
                Err(e) => {
                    warn!(effect = effect.name(), error = %e, "effect failed");
                    failed.get_or_insert(e);
                }
            }
        }
        (next, failed)
    }

    /// Read, decide, write (conditionally), re-reading and re-deciding after a lost race.
    /// `Ok(None)` when the run does not exist or the engine refused the event.
    pub(super) async fn apply(
        &self,
        run_id: &str,
        event: &Event,
        preloaded: Option<Run>,
    ) -> Result<Option<Applied>, ExecError> {
        match self.try_apply(run_id, event, preloaded).await? {
            ApplyOutcome::Applied(applied) => Ok(Some(applied)),
            ApplyOutcome::Missing => {
                warn!(event = event.name(), "no such run; dropping the event");
                Ok(None)
            }
            ApplyOutcome::Rejected(rejection) => {
                warn!(event = event.name(), %rejection, "the engine refused the event; dropping it");
                Ok(None)
            }
        }
    }

    /// [`Executor::apply`], telling a missing run and a refused event apart.
    async fn try_apply(
        &self,
        run_id: &str,
        event: &Event,
        mut preloaded: Option<Run>,
    ) -> Result<ApplyOutcome, ExecError> {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let mut run = match preloaded.take() {
                Some(run) => run,
                None => match self.store.get_run(run_id).await? {
                    Some(run) => run,
                    None => return Ok(ApplyOutcome::Missing),
                },
            };
            let def = self.definition(&run).await?;
            let before = Before::of(&run);
            let expected = run.version;
            let now = self.clock.now_ms();
            let changes = match decide_mut(&mut run, &def, event, now) {
                Ok(changes) => changes,
                Err(rejection) => return Ok(ApplyOutcome::Rejected(rejection)),
            };
            if changes.changed {
                run.version = expected + 1;
                match self.store.put_run(&run, expected, &changes.audit).await {
                    Ok(()) => {}
                    Err(e) if e.is_conflict() => {
                        debug!(
                            attempt,
                            "another writer changed the run; re-reading and deciding again"
                        );
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(ApplyOutcome::Applied(Applied {
                run,
                def,
                effects: changes.effects,
                before,
                fresh: true,
            }));
        }
        Err(ExecError::Contention {
            run_id: run_id.to_string(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    async fn enqueue_events(
        &self,
        run_id: &str,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<(), ExecError> {
        let messages: Vec<(WorkMessage, Duration)> = events
            .into_iter()
            .map(|event| {
                (
                    WorkMessage::Event {
                        run_id: run_id.to_string(),
                        event,
                    },
                    Duration::ZERO,
                )
            })
            .collect();
        self.queue.send_batch(&messages).await?;
        Ok(())
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<(String, u64), Arc<WorkflowDefinition>>> {
        // The map is only read and inserted into; a panic elsewhere cannot leave it torn.
        self.definitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The definition version the run is pinned to (cached: pinned versions never change).
    /// [`ExecError::MissingWorkflow`] when the workflow store no longer has it.
    pub async fn definition(&self, run: &Run) -> Result<Arc<WorkflowDefinition>, ExecError> {
        let key = (run.workflow_id.clone(), run.workflow_version);
        if let Some(def) = self.cache().get(&key) {
            return Ok(def.clone());
        }
        let stored = self
            .workflows
            .get_workflow(&run.workflow_id, Some(run.workflow_version))
            .await?
            .ok_or_else(|| ExecError::MissingWorkflow {
                run_id: run.id.clone(),
                workflow_id: run.workflow_id.clone(),
                version: run.workflow_version,
            })?;
        let def = Arc::new(stored.definition);
        let mut cache = self.cache();
        if cache.len() >= DEFINITION_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(key, def.clone());
        Ok(def)
    }
}

/// The agent service workflow of an agent step.
pub(super) fn agent_workflow(def: &WorkflowDefinition, step: &str) -> Option<String> {
    match &def.step(step)?.action {
        StepAction::Agent(a) => Some(a.workflow.clone()),
        _ => None,
    }
}

/// The queue delay until `at`, within what the queue accepts (0..=900 s).
pub fn delay_until(now: Millis, at: Millis) -> Duration {
    let max = i64::try_from(MAX_DELAY.as_millis()).unwrap_or(i64::MAX);
    let ms = at.saturating_sub(now).clamp(0, max);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The step a work message is about, for log fields.
pub fn message_step(message: &WorkMessage) -> Option<&str> {
    match message {
        WorkMessage::Poll { step, .. } => Some(step),
        WorkMessage::Event { event, .. } => event_step(event).map(|(step, _)| step),
        WorkMessage::Wake { .. } | WorkMessage::Perform { .. } => None,
        WorkMessage::Deliver { delivery, .. } => match delivery {
            crate::notify::Delivery::ApprovalRequested { step, .. }
            | crate::notify::Delivery::ApprovalReminder { step, .. }
            | crate::notify::Delivery::ApprovalClosed { step, .. } => Some(step),
            crate::notify::Delivery::Lifecycle { step, .. } => step.as_deref(),
            _ => None,
        },
    }
}

/// The step (and attempt) an event is about, for log fields.
pub fn event_step(event: &Event) -> Option<(&str, Option<u32>)> {
    match event {
        Event::AgentStarted { step, attempt, .. }
        | Event::AgentStartFailed { step, attempt, .. }
        | Event::AgentObserved { step, attempt, .. }
        | Event::AgentKilled { step, attempt }
        | Event::StepSucceeded { step, attempt, .. }
        | Event::StepFailed { step, attempt, .. } => Some((step, Some(*attempt))),
        Event::CompensationFinished { step, .. } => Some((step, None)),
        Event::FeedbackSent { step, .. }
        | Event::RetryRequested {
            from_step: step, ..
        } => step.as_deref().map(|s| (s, None)),
        _ => None,
    }
}

fn effect_span(effect: &Effect) -> tracing::Span {
    let span = info_span!(
        "effect",
        effect = effect.name(),
        step_id = field::Empty,
        attempt = field::Empty
    );
    let (step, attempt) = match effect {
        Effect::StartAgent { step, attempt, .. }
        | Effect::PollAgent { step, attempt, .. }
        | Effect::KillAgent { step, attempt, .. }
        | Effect::CallHttp { step, attempt, .. }
        | Effect::Notify { step, attempt, .. } => (Some(step.as_str()), Some(*attempt)),
        Effect::SendAgentMessage { step, .. }
        | Effect::RequestApproval { step, .. }
        | Effect::RemindApproval { step, .. }
        | Effect::CloseApproval { step, .. }
        | Effect::Compensate { step, .. } => (Some(step.as_str()), None),
        Effect::Emit { step, .. } => (step.as_deref(), None),
        Effect::ScheduleWake { .. } => (None, None),
    };
    if let Some(step) = step {
        span.record("step_id", step);
    }
    if let Some(attempt) = attempt {
        span.record("attempt", attempt);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_clamped_to_what_the_queue_accepts() {
        assert_eq!(delay_until(1_000, 500), Duration::ZERO);
        assert_eq!(delay_until(1_000, 1_250), Duration::from_millis(250));
        assert_eq!(delay_until(0, 3_600_000), MAX_DELAY);
    }
}
