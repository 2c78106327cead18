//! Deliveries (Slack, outbound webhooks) and deferred effects, handled from the work queue.
//!
//! A delivery that fails in a way that may pass is re-sent to the queue with a delay (longer
//! delays than the queue allows hop until due), so it never blocks the message that caused it.

use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::error::ExecError;
use super::executor::{Applied, Before, Executor, delay_until};
use crate::engine::Effect;
use crate::model::Millis;
use crate::notify::{Delivery, Outcome};
use crate::ports::WorkMessage;

/// Attempts of one delivery before it is given up (webhooks keep their own, longer schedule).
pub const MAX_DELIVERY_ATTEMPTS: u32 = 8;

impl Executor {
    /// The delivery an effect asks for, if it is a notification effect.
    pub(super) fn delivery_for(
        &self,
        run: &crate::model::Run,
        effect: &Effect,
    ) -> Option<Delivery> {
        let now = self.clock.now_ms();
        match effect {
            Effect::RequestApproval {
                step,
                approval_id,
                approvers,
                escalation,
                ..
            } => Some(Delivery::ApprovalRequested {
                step: step.clone(),
                approval_id: approval_id.clone(),
                escalation: *escalation,
                approvers: if *escalation {
                    approvers.clone()
                } else {
                    Vec::new()
                },
            }),
            Effect::RemindApproval {
                step,
                approval_id,
                reminder,
            } => Some(Delivery::ApprovalReminder {
                step: step.clone(),
                approval_id: approval_id.clone(),
                reminder: *reminder,
            }),
            Effect::CloseApproval {
                step,
                approval_id,
                status,
            } => Some(Delivery::ApprovalClosed {
                step: step.clone(),
                approval_id: approval_id.clone(),
                status: *status,
                approval: run.approval(approval_id).map(|(_, a)| a.clone()),
            }),
            Effect::Emit { event, step, data } => Some(Delivery::Lifecycle {
                event: event.clone(),
                step: step.clone(),
                data: data.clone(),
                at: now,
            }),
            _ => None,
        }
    }

    /// Queue a delivery for the run (first attempt, no delay).
    pub(super) async fn queue_delivery(
        &self,
        run_id: &str,
        delivery: Delivery,
    ) -> Result<(), ExecError> {
        let message = WorkMessage::Deliver {
            run_id: run_id.to_string(),
            delivery,
            attempt: 1,
            not_before: None,
        };
        self.queue.send(&message, Duration::ZERO).await?;
        Ok(())
    }

    /// Perform effects written by [`Executor::command_deferred`], then apply their outcomes.
    pub(super) async fn perform_deferred(
        &self,
        run_id: &str,
        effects: &[Effect],
    ) -> Result<(), ExecError> {
        let Some(run) = self.store.get_run(run_id).await? else {
            debug!("the run does not exist; dropping its deferred effects");
            return Ok(());
        };
        let def = self.definition(&run).await?;
        let applied = Applied {
            before: Before::of(&run),
            run,
            def,
            effects: effects.to_vec(),
            fresh: false,
        };
        self.carry_on(run_id, applied).await
    }

    /// One delivery attempt; a failure that may pass is re-sent with a delay.
    pub(super) async fn deliver(
        &self,
        run_id: &str,
        delivery: &Delivery,
        attempt: u32,
        not_before: Option<Millis>,
    ) -> Result<(), ExecError> {
        let now = self.clock.now_ms();
        if let Some(at) = not_before
            && now < at
        {
            let message = WorkMessage::Deliver {
                run_id: run_id.to_string(),
                delivery: delivery.clone(),
                attempt,
                not_before,
            };
            self.queue.send(&message, delay_until(now, at)).await?;
            return Ok(());
        }
        let outcome = self.try_deliver(run_id, delivery, attempt, now).await?;
        match outcome {
            Outcome::Done => Ok(()),
            Outcome::Then(more) => {
                let messages: Vec<(WorkMessage, Duration)> = more
                    .into_iter()
                    .map(|delivery| {
                        (
                            WorkMessage::Deliver {
                                run_id: run_id.to_string(),
                                delivery,
                                attempt: 1,
                                not_before: None,
                            },
                            Duration::ZERO,
                        )
                    })
                    .collect();
                self.queue.send_batch(&messages).await?;
                Ok(())
            }
            Outcome::Retry { after, error } => {
                let webhook = matches!(delivery, Delivery::Webhook { .. });
                if !webhook && attempt >= MAX_DELIVERY_ATTEMPTS {
                    error!(delivery = delivery.name(), attempt, %error, "delivery failed; giving up after {MAX_DELIVERY_ATTEMPTS} attempts");
                    return Ok(());
                }
                warn!(delivery = delivery.name(), attempt, retry_in_ms = after.as_millis() as u64, %error, "delivery failed; retrying later");
                let at = now + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
                let message = WorkMessage::Deliver {
                    run_id: run_id.to_string(),
                    delivery: delivery.clone(),
                    attempt: attempt + 1,
                    not_before: Some(at),
                };
                self.queue.send(&message, delay_until(now, at)).await?;
                Ok(())
            }
            Outcome::GiveUp(why) => {
                error!(delivery = delivery.name(), attempt, error = %why, "delivery failed and retrying cannot help; dropped");
                Ok(())
            }
        }
    }

    async fn try_deliver(
        &self,
        run_id: &str,
        delivery: &Delivery,
        attempt: u32,
        now: Millis,
    ) -> Result<Outcome, ExecError> {
        let Some(notifier) = self.notifier.as_ref() else {
            info!(
                delivery = delivery.name(),
                ?delivery,
                "no notifier configured; delivery logged only"
            );
            return Ok(Outcome::Done);
        };
        let links = notifier.links();
        // Webhook messages and ephemeral replies carry all they need; the rest render the
        // run as it is now.
        match delivery {
            Delivery::Webhook {
                subscription_id,
                message_id,
                event,
                payload,
            } => {
                return Ok(notifier
                    .webhooks()
                    .send(subscription_id, message_id, event, payload, attempt, now)
                    .await);
            }
            Delivery::SlackEphemeral {
                channel,
                user,
                text,
            } => {
                return Ok(match &notifier.slack {
                    Some(slack) => slack.ephemeral(channel, user, text, attempt).await,
                    None => {
                        info!(%user, %text, "no Slack token; ephemeral reply logged only");
                        Outcome::Done
                    }
                });
            }
            _ => {}
        }
        let Some(run) = self.store.get_run(run_id).await? else {
            debug!("the run does not exist; dropping the delivery");
            return Ok(Outcome::Done);
        };
        let def = self.definition(&run).await?;
        let slack = notifier.slack.as_ref();
        Ok(match delivery {
            Delivery::ApprovalRequested {
                approval_id,
                escalation,
                approvers,
                ..
            } => match slack {
                Some(s) => {
                    s.approval_requested(
                        &run,
                        &def,
                        approval_id,
                        *escalation,
                        approvers,
                        links,
                        attempt,
                    )
                    .await
                }
                None => {
                    info!(approval_id = %approval_id, "approval requested (no Slack token: not posted; decide through the API or a link)");
                    Outcome::Done
                }
            },
            Delivery::ApprovalReminder {
                approval_id,
                reminder,
                ..
            } => match slack {
                Some(s) => {
                    s.reminder(&run, &def, approval_id, *reminder, links, attempt)
                        .await
                }
                None => {
                    info!(approval_id = %approval_id, reminder, "approval reminder (no Slack token: logged only)");
                    Outcome::Done
                }
            },
            Delivery::ApprovalClosed {
                step,
                approval_id,
                approval,
                ..
            } => match slack {
                Some(s) => {
                    let closed = approval.as_ref().map(|a| (step.as_str(), a));
                    s.update_approval(&run, &def, approval_id, closed, links, attempt)
                        .await
                }
                None => Outcome::Done,
            },
            Delivery::Lifecycle {
                event,
                step,
                data,
                at,
            } => {
                // The run's concurrency slot first (the next queued run waits on it), then
                // chaining: both are idempotent, so retrying repeats nothing.
                if let Some(retry) = self.release_slot(&run, event, attempt).await {
                    return Ok(retry);
                }
                if let Some(retry) = self.chain(&run, event, attempt).await {
                    return Ok(retry);
                }
                // Slack first: a failure there is retried as a whole, and the webhook fan-out
                // below is idempotent (message ids are derived from the event).
                if let Some(s) = slack {
                    match s
                        .lifecycle(&run, &def, event, step.as_deref(), data, links, attempt)
                        .await
                    {
                        Outcome::Retry { after, error } if attempt < MAX_DELIVERY_ATTEMPTS => {
                            return Ok(Outcome::Retry { after, error });
                        }
                        Outcome::Retry { error, .. } | Outcome::GiveUp(error) => {
                            warn!(event = %event, %error, "the run's Slack thread was not updated");
                        }
                        _ => {}
                    }
                }
                let data = self.with_links(&run, event, data);
                match notifier
                    .webhooks()
                    .fan_out(&run, event, step.as_deref(), &data, *at)
                    .await
                {
                    Ok(more) if more.is_empty() => Outcome::Done,
                    Ok(more) => Outcome::Then(more),
                    Err(e) => Outcome::Retry {
                        after: Duration::from_secs(5),
                        error: format!("could not read webhook subscriptions: {e}"),
                    },
                }
            }
            Delivery::Webhook { .. } | Delivery::SlackEphemeral { .. } => Outcome::Done,
        })
    }

    /// An `approval.requested` event gains one-time approval links (approve / reject) when a
    /// link key and a public URL are configured, so a webhook receiver can offer them.
    fn with_links(
        &self,
        run: &crate::model::Run,
        event: &str,
        data: &serde_json::Value,
    ) -> serde_json::Value {
        let mut data = data.clone();
        if event != "approval.requested" {
            return data;
        }
        let Some(notifier) = self.notifier.as_ref() else {
            return data;
        };
        let Some(approval_id) = data.get("approval_id").and_then(|v| v.as_str()) else {
            return data;
        };
        let Some((_, approval)) = run.approval(approval_id) else {
            return data;
        };
        let now_secs = self.clock.now_ms() / 1000;
        if let Some(links) = crate::notify::approval_links(notifier.links(), approval, now_secs) {
            data["links"] = links;
        }
        data
    }
}
