//! The runtime: what performs the engine's decisions.
//!
//! - [`Executor`] handles one [`WorkMessage`](crate::ports::WorkMessage): read the run, let the
//!   engine decide, write conditionally on the version read (re-reading and re-deciding after a
//!   lost race), then perform the effects in order and feed their outcomes back as events.
//! - [`sweep`] re-wakes runs whose `wake_at` passed (lost messages, crashes).
//! - [`start_run`] creates a run of a stored workflow already started (the engine decides the
//!   start before the first write) and enqueues the start's effects.
//! - [`Clock`] is where `now` comes from ([`SystemClock`], or [`ManualClock`] in tests).
//!
//! The same code runs on Lambda (DynamoDB, SQS), in `flowgate serve` (redb, in-process queue)
//! and in tests; only the ports differ.

mod agent;
mod chain;
mod clock;
mod concurrency;
mod deliver;
mod effects;
mod error;
mod executor;
mod live;
mod schedules;
mod sessions;
mod start;
mod sweeper;

pub use agent::AgentApi;
pub use chain::MAX_CHAIN_DEPTH;
pub use clock::{Clock, ManualClock, SystemClock};
pub use concurrency::{Admission, GROUPS, GroupState, ORPHAN_AFTER_MS, group_of};
pub use deliver::MAX_DELIVERY_ATTEMPTS;
pub use effects::{MAX_HTTP_OUTPUT_BYTES, START_CLAIMS};
pub use error::ExecError;
pub use executor::{
    CommandError, Executor, HTTP_TIMEOUT, Handled, MAX_INLINE_EVENTS, MAX_WRITE_ATTEMPTS, Receipt,
    delay_until, event_step, message_step,
};
pub use live::{LIVE_PROGRESS_TIMEOUT, observe_live};
pub use schedules::{
    Fired, SCHEDULE_LAST_RUN, ScheduleError, SchedulePorts, SyncReport, Ticker, fire_schedule,
    reconcile_schedules, sync_schedules,
};
pub use sessions::{live_session, live_sessions, session_record_name};
pub use start::{CheckedRun, NewRun, StartError, StartedRun, check_run, create_run, start_run};
pub use sweeper::{SWEEP_GRACE_MS, SweepPorts, SweepReport, sweep, sweep_all};
