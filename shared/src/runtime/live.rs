//! Live agent progress for someone looking at a run now.
//!
//! Polls record an agent's progress (turns, tokens, cost) at most every
//! `polling.progress_every`, 5 minutes by default: on AWS most of a polled run's DynamoDB
//! writes used to be progress nobody was reading. A read of one run (`GET /v1/runs/{id}`, and
//! the MCP tool and dashboard built on it) can afford one status call per running agent step,
//! so it shows the agent service's figures as of now instead.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use tracing::debug;

use super::agent::AgentApi;
use super::executor::agent_workflow;
use crate::definition::WorkflowDefinition;
use crate::engine::AgentObservation;
use crate::model::{AgentRunStatus, Run, StepStatus};

/// How long a read waits for the agent service before it shows the recorded figures.
pub const LIVE_PROGRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The agent service's current figures for each of `run`'s running agent steps, by step id.
/// A step whose call fails or takes longer than [`LIVE_PROGRESS_TIMEOUT`] is left out (its
/// recorded figures stand). Nothing is written: the poll chain records what matters (a change
/// of status, a budget crossed) on its own.
pub async fn observe_live(
    agent: &dyn AgentApi,
    run: &Run,
    def: &WorkflowDefinition,
) -> BTreeMap<String, AgentObservation> {
    let watched = run.steps.iter().filter_map(|(id, s)| {
        let a = s.agent.as_ref().filter(|a| {
            s.status == StepStatus::Running
                && matches!(
                    a.upstream_status,
                    None | Some(AgentRunStatus::Pending | AgentRunStatus::Running)
                )
        })?;
        let upstream = a.upstream_run_id.clone()?;
        Some((id.clone(), agent_workflow(def, id)?, upstream))
    });
    let calls = watched.map(|(step, workflow, upstream)| async move {
        let answer =
            tokio::time::timeout(LIVE_PROGRESS_TIMEOUT, agent.observe(&workflow, &upstream)).await;
        match answer {
            Ok(Ok(observation)) => Some((step, observation)),
            Ok(Err(e)) => {
                debug!(step_id = %step, error = %e, "no live progress; showing the recorded figures");
                None
            }
            Err(_) => {
                debug!(step_id = %step, "the agent service is slow; showing the recorded figures");
                None
            }
        }
    });
    join_all(calls).await.into_iter().flatten().collect()
}
