//! The field names each part of a definition accepts, kept in one place.
//!
//! For plain structs the names are read from the struct itself: serde's derive passes its field
//! list to `Deserializer::deserialize_struct`, and [`struct_fields`] captures it. Adding a field to
//! `AgentAction` therefore makes it accepted here with no second edit. The two shapes serde cannot
//! describe that way — `StepDef` (its action is `#[serde(flatten)]`ed) and the internally tagged
//! `TriggerDef` — are listed by hand below, and unit tests compare those lists with what the types
//! actually serialize so they cannot drift apart silently.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use super::Walk;
use crate::definition::{
    AgentAction, ApprovalAction, HttpAction, InputSpec, NotificationDef, NotifyAction,
    OverlapPolicy, RetryPolicy, StepKind, WaitAction, WebhookVerify, WorkflowDefinition,
};

/// The fields of a plain (non-flattened) serde struct, in declaration order.
///
/// Returns an empty list for types that do not deserialize as a struct; the unit tests make sure
/// every type used here yields its fields.
pub(super) fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always errors (it has no data to give); the side effect is the captured list.
    let _ = T::deserialize(FieldsProbe { out: &mut fields });
    fields
}

/// A deserializer that records the field list a struct asks for and then gives up.
struct FieldsProbe<'a> {
    out: &'a mut &'static [&'static str],
}

impl<'de> Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a plain struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.out = fields;
        Err(de::Error::custom("field names captured"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Top-level fields of a definition.
pub(super) fn workflow() -> &'static [&'static str] {
    struct_fields::<WorkflowDefinition>()
}

/// Fields every step has, whatever its kind (`StepDef` minus its flattened action, plus `kind`).
pub(super) const STEP_COMMON: &[&str] = &[
    "id",
    "name",
    "kind",
    "depends_on",
    "when",
    "timeout",
    "retry",
    "continue_on_failure",
    "compensate",
];

/// Step kinds as written in definitions.
pub(super) const STEP_KINDS: [&str; 5] = ["agent", "approval", "notify", "http", "wait"];

pub(super) fn step_kind(name: &str) -> Option<StepKind> {
    StepKind::ALL.into_iter().find(|k| k.as_str() == name)
}

/// The fields of one step kind's action (next to the common fields in a step, alone with `kind`
/// in a `compensate` block).
pub(super) fn action(kind: StepKind) -> &'static [&'static str] {
    match kind {
        StepKind::Agent => struct_fields::<AgentAction>(),
        StepKind::Approval => struct_fields::<ApprovalAction>(),
        StepKind::Notify => struct_fields::<NotifyAction>(),
        StepKind::Http => struct_fields::<HttpAction>(),
        StepKind::Wait => struct_fields::<WaitAction>(),
    }
}

/// The fields an action cannot do without. Checked before deserializing because a missing
/// `duration` would otherwise surface as `DurationSpec`'s generic "expected a duration" message.
pub(super) fn action_required(kind: StepKind) -> &'static [&'static str] {
    match kind {
        StepKind::Agent => &["workflow", "message"],
        StepKind::Approval | StepKind::Notify => &["message"],
        StepKind::Http => &["url"],
        StepKind::Wait => &["duration"],
    }
}

pub(super) fn input_spec() -> &'static [&'static str] {
    struct_fields::<InputSpec>()
}

pub(super) fn retry() -> &'static [&'static str] {
    struct_fields::<RetryPolicy>()
}

pub(super) fn notification() -> &'static [&'static str] {
    struct_fields::<NotificationDef>()
}

/// Checks one field's value by deserializing it as the field's type; reports problems to the walk.
pub(super) type FieldCheck = fn(&mut Walk<'_>, &Value, &str);

/// One field of a trigger: its name, whether it must be present, and its type check.
#[derive(Debug)]
pub(super) struct FieldSpec {
    pub name: &'static str,
    pub required: bool,
    pub check: FieldCheck,
}

fn check_as<T: DeserializeOwned>(walk: &mut Walk<'_>, value: &Value, path: &str) {
    let _ = walk.de::<T>(value, path);
}

const SCHEDULE: &[FieldSpec] = &[
    FieldSpec {
        name: "expression",
        required: true,
        check: check_as::<String>,
    },
    FieldSpec {
        name: "timezone",
        required: false,
        check: check_as::<Option<String>>,
    },
    FieldSpec {
        name: "inputs",
        required: false,
        check: check_as::<Map<String, Value>>,
    },
    FieldSpec {
        name: "overlap",
        required: false,
        check: check_as::<OverlapPolicy>,
    },
];

const WEBHOOK: &[FieldSpec] = &[
    FieldSpec {
        name: "id",
        required: true,
        check: check_as::<String>,
    },
    FieldSpec {
        name: "verify",
        required: false,
        check: check_as::<WebhookVerify>,
    },
    FieldSpec {
        name: "filter",
        required: false,
        check: check_as::<BTreeMap<String, Value>>,
    },
    FieldSpec {
        name: "inputs",
        required: false,
        check: check_as::<BTreeMap<String, String>>,
    },
];

const WORKFLOW_COMPLETED: &[FieldSpec] = &[
    FieldSpec {
        name: "workflow",
        required: true,
        check: check_as::<String>,
    },
    FieldSpec {
        name: "statuses",
        required: false,
        check: check_as::<Vec<String>>,
    },
    FieldSpec {
        name: "inputs",
        required: false,
        check: check_as::<BTreeMap<String, String>>,
    },
];

/// Trigger `type`s as written in definitions.
pub(super) const TRIGGER_TYPES: [&str; 3] = ["schedule", "webhook", "workflow_completed"];

/// The fields of a trigger of the given `type` (besides `type` itself).
pub(super) fn trigger(kind: &str) -> Option<&'static [FieldSpec]> {
    match kind {
        "schedule" => Some(SCHEDULE),
        "webhook" => Some(WEBHOOK),
        "workflow_completed" => Some(WORKFLOW_COMPLETED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::definition::{Backoff, HttpMethod, OnExpiry, StepAction, StepDef, TriggerDef, When};
    use crate::duration::DurationSpec;

    fn keys(v: &impl serde::Serialize) -> BTreeSet<String> {
        match serde_json::to_value(v) {
            Ok(Value::Object(m)) => m.keys().cloned().collect(),
            other => panic!("expected an object, got {other:?}"),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn agent() -> AgentAction {
        AgentAction {
            workflow: "architect".into(),
            message: "m".into(),
            max_turns: Some(5),
            session: Some("s".into()),
            repository_url: Some("https://example.com/r.git".into()),
            git_branch: Some("main".into()),
            budget: Some(crate::definition::Budget {
                max_cost_usd: Some(1.0),
                max_turns: None,
                max_duration: None,
                on_exceed: Default::default(),
                approvers: vec!["U9".into()],
            }),
        }
    }

    #[test]
    fn introspected_lists_match_what_the_structs_serialize() {
        let approval = ApprovalAction {
            message: "m".into(),
            approvers: vec!["U1".into()],
            required: 1,
            expires_in: Some(DurationSpec::from_secs(60)),
            on_expiry: OnExpiry::Escalate,
            escalate_to: vec!["U2".into()],
            escalate_after: Some(DurationSpec::from_secs(30)),
            remind_every: Some(DurationSpec::from_secs(10)),
            retry_step: Some("a".into()),
            slack_channel: Some("#c".into()),
        };
        let notify = NotifyAction {
            message: "m".into(),
            slack_channel: Some("#c".into()),
            webhook_url: Some("https://example.com".into()),
        };
        let http = HttpAction {
            method: HttpMethod::Post,
            url: "https://example.com".into(),
            headers: [("a".to_string(), "b".to_string())].into(),
            body: Some(json!({})),
            expect_status: vec![200],
        };
        let wait = WaitAction {
            duration: DurationSpec::from_secs(1),
        };
        let retry_policy = RetryPolicy {
            max_attempts: 2,
            backoff: Backoff::Fixed,
            initial_delay: DurationSpec::from_secs(1),
            max_delay: DurationSpec::from_secs(2),
        };
        let input = InputSpec {
            kind: crate::definition::InputType::String,
            required: true,
            default: Some(json!("x")),
            description: Some("d".into()),
        };
        let notification_def = NotificationDef {
            events: vec!["run.failed".into()],
            slack_channel: Some("#c".into()),
            webhook_url: Some("https://example.com".into()),
        };
        assert_eq!(set(action(StepKind::Agent)), keys(&agent()));
        assert_eq!(set(action(StepKind::Approval)), keys(&approval));
        assert_eq!(set(action(StepKind::Notify)), keys(&notify));
        assert_eq!(set(action(StepKind::Http)), keys(&http));
        assert_eq!(set(action(StepKind::Wait)), keys(&wait));
        assert_eq!(set(retry()), keys(&retry_policy));
        assert_eq!(set(input_spec()), keys(&input));
        assert_eq!(set(notification()), keys(&notification_def));
        assert_eq!(
            set(workflow()),
            set(&[
                "id",
                "name",
                "description",
                "inputs",
                "steps",
                "triggers",
                "notifications",
                "timeout",
                "outputs",
                "polling",
                "budget",
                "concurrency"
            ])
        );
    }

    #[test]
    fn step_common_fields_match_step_def() {
        let step = StepDef {
            id: "a".into(),
            name: Some("A".into()),
            action: StepAction::Agent(agent()),
            depends_on: vec!["b".into()],
            when: When::Always,
            timeout: Some(DurationSpec::from_secs(1)),
            retry: Some(RetryPolicy {
                max_attempts: 2,
                backoff: Backoff::Fixed,
                initial_delay: DurationSpec::from_secs(1),
                max_delay: DurationSpec::from_secs(2),
            }),
            continue_on_failure: true,
            compensate: Some(StepAction::Wait(WaitAction {
                duration: DurationSpec::from_secs(1),
            })),
        };
        let mut expected = keys(&step);
        for f in action(StepKind::Agent) {
            expected.remove(*f);
        }
        expected.insert("kind".into());
        assert_eq!(set(STEP_COMMON), expected);
        for (kind, name) in StepKind::ALL.iter().zip(STEP_KINDS) {
            assert_eq!(kind.as_str(), name);
            assert_eq!(step_kind(name), Some(*kind));
        }
    }

    #[test]
    fn trigger_tables_match_trigger_def() {
        let triggers = [
            TriggerDef::Schedule {
                expression: "rate(1 hour)".into(),
                timezone: Some("UTC".into()),
                inputs: [("a".to_string(), json!(1))].into_iter().collect(),
                overlap: OverlapPolicy::Allow,
            },
            TriggerDef::Webhook {
                id: "h".into(),
                verify: WebhookVerify::SharedSecret,
                filter: [("/a".to_string(), json!(1))].into(),
                inputs: [("a".to_string(), "/a".to_string())].into(),
            },
            TriggerDef::WorkflowCompleted {
                workflow: "w".into(),
                statuses: vec!["failed".into()],
                inputs: [("a".to_string(), "x".to_string())].into(),
            },
        ];
        for (t, name) in triggers.iter().zip(TRIGGER_TYPES) {
            let table = trigger(name).unwrap_or_else(|| panic!("no table for {name}"));
            let mut names: BTreeSet<String> = table.iter().map(|f| f.name.to_string()).collect();
            names.insert("type".into());
            assert_eq!(names, keys(t), "{name}");
        }
        assert!(trigger("cron").is_none());
    }

    #[test]
    fn required_action_fields_match_the_structs() {
        let sample = |field: &str| match field {
            "duration" => json!("1m"),
            "url" => json!("https://example.com"),
            _ => json!("x"),
        };
        for kind in StepKind::ALL {
            let required = action_required(kind);
            let full: Map<String, Value> = required
                .iter()
                .map(|f| (f.to_string(), sample(f)))
                .collect();
            let de = |m: &Map<String, Value>| {
                let v = Value::Object(m.clone());
                match kind {
                    StepKind::Agent => serde_json::from_value::<AgentAction>(v).is_ok(),
                    StepKind::Approval => serde_json::from_value::<ApprovalAction>(v).is_ok(),
                    StepKind::Notify => serde_json::from_value::<NotifyAction>(v).is_ok(),
                    StepKind::Http => serde_json::from_value::<HttpAction>(v).is_ok(),
                    StepKind::Wait => serde_json::from_value::<WaitAction>(v).is_ok(),
                }
            };
            assert!(de(&full), "{kind:?} needs only {required:?}");
            for f in required {
                let mut less = full.clone();
                less.remove(*f);
                assert!(!de(&less), "{kind:?} cannot do without {f}");
            }
        }
    }

    #[test]
    fn probe_returns_nothing_for_non_structs() {
        assert!(struct_fields::<String>().is_empty());
        assert!(
            struct_fields::<StepDef>().is_empty(),
            "flattened structs are maps to serde"
        );
    }
}
