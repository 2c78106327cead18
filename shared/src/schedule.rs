//! Schedules: a workflow's `schedule` triggers as the entries a scheduler holds, and the
//! expressions evaluated locally.
//!
//! On AWS each entry is an EventBridge Scheduler schedule (in one schedule group) whose target
//! is the triggers function with a [`ScheduledStart`] as input; in `flowgate serve` the entries
//! are records and an in-process ticker fires them ([`next_fire`]). Both are written by the
//! same sync ([`crate::runtime::sync_schedules`]) through the [`Scheduler`](crate::ports::Scheduler)
//! port, and both deliver the same [`ScheduledStart`] to the same start logic.
//!
//! Names: `<workflow id>.<n>` for the workflow's n-th schedule trigger (workflow ids cannot
//! contain `.`, so `<workflow id>.` is a prefix no other workflow's schedules share). Ids too
//! long for EventBridge's 64 characters are shortened with a hash.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::definition::{OverlapPolicy, StoredWorkflow, TriggerDef};
use crate::model::Millis;

/// EventBridge Scheduler's longest schedule name.
pub const MAX_SCHEDULE_NAME: usize = 64;

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// Placeholder EventBridge Scheduler replaces with the scheduled time in a target's input.
pub const SCHEDULED_TIME_PLACEHOLDER: &str = "<aws.scheduler.scheduled-time>";

/// The `flowgate` field of an event that is a scheduled start.
pub const SCHEDULE_EVENT: &str = "schedule";

/// One schedule as a scheduler holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    pub name: String,
    /// `cron(...)` or `rate(...)`, as in the definition.
    pub expression: String,
    /// IANA time zone the cron fields are read in.
    pub timezone: String,
    pub target: ScheduledStart,
}

/// What a schedule delivers to the triggers function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledStart {
    pub schedule: String,
    pub workflow_id: String,
    /// The version whose definition holds the schedule.
    pub workflow_version: u64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// When the schedule fired (RFC 3339). EventBridge fills it in from
    /// [`SCHEDULED_TIME_PLACEHOLDER`]; with the schedule's name it is the run's idempotency
    /// key, so a repeated delivery starts nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<String>,
}

impl ScheduledStart {
    /// The event a scheduler sends: the start with `"flowgate": "schedule"`, so the triggers
    /// function can tell it from other events. `scheduled_time` defaults to the placeholder.
    pub fn to_event(&self) -> Value {
        let mut start = self.clone();
        if start.scheduled_time.is_none() {
            start.scheduled_time = Some(SCHEDULED_TIME_PLACEHOLDER.to_string());
        }
        let mut value = serde_json::to_value(&start).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("flowgate".into(), Value::from(SCHEDULE_EVENT));
        }
        value
    }

    /// Read an event written by [`ScheduledStart::to_event`] (an unfilled placeholder reads as
    /// no time).
    pub fn from_event(event: &Value) -> Result<Self, serde_json::Error> {
        let mut start: ScheduledStart = serde_json::from_value(event.clone())?;
        if start.scheduled_time.as_deref() == Some(SCHEDULED_TIME_PLACEHOLDER) {
            start.scheduled_time = None;
        }
        Ok(start)
    }
}

/// The prefix every schedule of a workflow has.
pub fn schedule_prefix(workflow_id: &str) -> String {
    // `.` + up to three digits must fit after the prefix.
    const ROOM: usize = MAX_SCHEDULE_NAME - 4;
    if workflow_id.len() < ROOM {
        format!("{workflow_id}.")
    } else {
        let hash = hex::encode(&Sha256::digest(workflow_id.as_bytes())[..4]);
        let keep = ROOM - hash.len() - 2;
        format!("{}-{hash}.", &workflow_id[..keep])
    }
}

/// The name of a workflow's `index`-th schedule trigger (counting schedule triggers only).
pub fn schedule_name(workflow_id: &str, index: usize) -> String {
    format!("{}{index}", schedule_prefix(workflow_id))
}

/// The schedule entries a stored workflow's definition asks for.
pub fn schedules_of(stored: &StoredWorkflow) -> Vec<ScheduleEntry> {
    let def = &stored.definition;
    def.triggers
        .iter()
        .filter_map(|t| match t {
            TriggerDef::Schedule {
                expression,
                timezone,
                inputs,
                overlap,
            } => Some((expression, timezone, inputs, overlap)),
            _ => None,
        })
        .enumerate()
        .map(|(i, (expression, timezone, inputs, overlap))| {
            let name = schedule_name(&def.id, i);
            ScheduleEntry {
                name: name.clone(),
                expression: expression.trim().to_string(),
                timezone: timezone
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TIMEZONE.to_string()),
                target: ScheduledStart {
                    schedule: name,
                    workflow_id: def.id.clone(),
                    workflow_version: stored.version,
                    inputs: inputs.clone(),
                    overlap: *overlap,
                    scheduled_time: None,
                },
            }
        })
        .collect()
}

/// Why an expression cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("{0:?} is not an IANA time zone name like \"Europe/Paris\" or \"UTC\"")]
    TimeZone(String),
    #[error("schedule expression {expression:?}: {reason}")]
    Expression { expression: String, reason: String },
}

/// A parsed schedule expression.
#[derive(Debug, Clone)]
pub enum Expression {
    Cron(Box<Cron>, Tz),
    /// Every this many milliseconds, from when the schedule was created.
    Rate(i64),
}

/// Read a time zone name.
pub fn time_zone(name: &str) -> Result<Tz, ExpressionError> {
    name.parse::<Tz>()
        .map_err(|_| ExpressionError::TimeZone(name.to_string()))
}

impl Expression {
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ExpressionError> {
        let bad = |reason: String| ExpressionError::Expression {
            expression: expression.to_string(),
            reason,
        };
        let tz = time_zone(timezone)?;
        let text = expression.trim();
        if let Some(body) = text.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
            // EventBridge: minutes hours day-of-month month day-of-week year, weekdays 1-7 from
            // Sunday (Quartz style); croner wants seconds first.
            let cron = CronParser::builder()
                .seconds(Seconds::Required)
                .year(Year::Required)
                .alternative_weekdays(true)
                .build()
                .parse(&format!("0 {body}"))
                .map_err(|e| bad(e.to_string()))?;
            return Ok(Expression::Cron(Box::new(cron), tz));
        }
        if let Some(body) = text.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            let mut parts = body.split_whitespace();
            let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("write rate(<n> <unit>)".into()));
            };
            let n: i64 = n
                .parse()
                .map_err(|_| bad(format!("{n:?} is not a whole number")))?;
            let unit_ms = match unit.trim_end_matches('s') {
                "minute" => 60_000,
                "hour" => 3_600_000,
                "day" => 86_400_000,
                other => return Err(bad(format!("unknown unit {other:?}"))),
            };
            if n < 1 {
                return Err(bad("the rate must be at least 1".into()));
            }
            return Ok(Expression::Rate(n.saturating_mul(unit_ms)));
        }
        Err(bad("write cron(...) or rate(...)".into()))
    }

    /// The first firing strictly after `after` (epoch ms); for a rate, `anchor` is when the
    /// schedule was created (it fires at anchor + k × interval). `None`: never again.
    pub fn next_after(&self, after: Millis, anchor: Millis) -> Option<Millis> {
        match self {
            Expression::Rate(every) => {
                let elapsed = after.saturating_sub(anchor).max(0);
                Some(anchor + (elapsed / every + 1) * every)
            }
            Expression::Cron(cron, tz) => {
                let start = tz.timestamp_millis_opt(after).single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }
}

/// An instant as EventBridge writes scheduled times (`2026-11-21T10:00:00Z`).
pub fn format_time(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Read an RFC 3339 time; `None` when it is not one.
pub fn parse_time(text: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        parse_time(text).expect("time")
    }

    #[test]
    fn cron_fires_in_its_time_zone() {
        let e = Expression::parse("cron(0 9 ? * MON-FRI *)", "Europe/Paris").expect("parses");
        // Saturday 2026-11-21 12:00 UTC → Monday 09:00 Paris = 08:00 UTC.
        let next = e.next_after(at("2026-11-21T12:00:00Z"), 0).expect("fires");
        assert_eq!(format_time(next), "2026-11-23T08:00:00Z");
        let e = Expression::parse("cron(30 2 1 * ? *)", "UTC").expect("parses");
        let next = e.next_after(at("2026-11-21T12:00:00Z"), 0).expect("fires");
        assert_eq!(format_time(next), "2026-12-01T02:30:00Z");
        // 1 = Sunday in EventBridge.
        let e = Expression::parse("cron(0 0 ? * 1 *)", "UTC").expect("parses");
        let next = e.next_after(at("2026-11-21T12:00:00Z"), 0).expect("fires");
        assert_eq!(format_time(next), "2026-11-22T00:00:00Z");
    }

    #[test]
    fn rate_fires_from_its_anchor() {
        let e = Expression::parse("rate(5 minutes)", "UTC").expect("parses");
        let anchor = at("2026-11-21T12:00:00Z");
        assert_eq!(e.next_after(anchor, anchor), Some(anchor + 300_000));
        assert_eq!(
            e.next_after(anchor + 299_999, anchor),
            Some(anchor + 300_000)
        );
        assert_eq!(
            e.next_after(anchor + 300_000, anchor),
            Some(anchor + 600_000)
        );
        assert!(Expression::parse("rate(0 minutes)", "UTC").is_err());
        assert!(Expression::parse("rate(5 weeks)", "UTC").is_err());
        assert!(matches!(
            Expression::parse("rate(1 day)", "Mars/Olympus"),
            Err(ExpressionError::TimeZone(_))
        ));
    }

    #[test]
    fn names_fit_eventbridge_and_prefixes_do_not_overlap() {
        assert_eq!(schedule_name("nightly", 0), "nightly.0");
        let long = "a".repeat(64);
        let name = schedule_name(&long, 19);
        assert!(name.len() <= MAX_SCHEDULE_NAME, "{name}");
        assert!(name.starts_with(&schedule_prefix(&long)));
        assert!(!schedule_name("a-b", 0).starts_with(&schedule_prefix("a")));
    }

    #[test]
    fn the_event_round_trips_and_the_placeholder_reads_as_no_time() {
        let start = ScheduledStart {
            schedule: "w.0".into(),
            workflow_id: "w".into(),
            workflow_version: 3,
            inputs: Map::new(),
            overlap: OverlapPolicy::Skip,
            scheduled_time: None,
        };
        let event = start.to_event();
        assert_eq!(event["flowgate"], "schedule");
        assert_eq!(event["scheduled_time"], SCHEDULED_TIME_PLACEHOLDER);
        assert_eq!(ScheduledStart::from_event(&event).expect("reads"), start);
    }
}
