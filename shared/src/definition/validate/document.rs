//! From text to a typed definition, collecting every structural problem on the way.
//!
//! serde alone stops at the first error, and through `#[serde(flatten)]` and internally tagged
//! enums it loses track of where the error was. So the raw document is walked by hand: each
//! piece (a top-level field, a step's common field, a step's action, a trigger, ...) is checked
//! for unknown fields and then deserialized on its own through `serde_path_to_error`. A bad
//! duration in `steps[1].timeout` is then reported at exactly that path, and nothing else is
//! hidden by it. The typed definition is assembled from the pieces.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::Problem;
use super::fields::{self, FieldSpec};
use super::support::{describe, did_you_mean, humanize, index, join, join_serde_path, list};
use crate::definition::{
    AgentAction, ApprovalAction, Budget, ConcurrencyLimit, HttpAction, InputSpec, NotificationDef,
    NotifyAction, PollingPolicy, RetryPolicy, StepAction, StepDef, StepKind, TriggerDef,
    WaitAction, When, WorkflowDefinition,
};
use crate::duration::DurationSpec;

/// Parse YAML or JSON text into a JSON value, refusing duplicate keys.
///
/// Text whose first character is `{` is read as JSON so JSON syntax errors carry JSON's line and
/// column; anything else is YAML (which also accepts most JSON).
pub(super) fn parse_text(text: &str) -> Result<Value, Problem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    let parsed = if trimmed.starts_with('{') {
        serde_json::from_str::<StrictValue>(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        serde_norway::from_str::<StrictValue>(text).map_err(|e| format!("invalid YAML: {e}"))
    };
    parsed.map(|v| v.0).map_err(|message| Problem {
        path: String::new(),
        message,
    })
}

/// A JSON value deserialized from any format, with duplicate mapping keys refused (YAML and
/// serde_json would otherwise keep the last one silently, hiding e.g. a second `steps:`).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plain value (YAML tags such as !Ref are not supported)")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("numbers must be finite (no .inf or .nan)"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key {key:?}; each key may appear once in a mapping"
                )));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Collects problems while walking the document.
#[derive(Debug)]
pub(super) struct Walk<'p> {
    problems: &'p mut Vec<Problem>,
    /// False once any piece failed to deserialize; the typed definition is then not built.
    /// Unknown fields do not clear it: serde ignores them, so semantic checks can still run.
    typed_ok: bool,
}

impl Walk<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A problem that leaves a piece of the definition unusable.
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.typed_ok = false;
        self.problem(path, message);
    }

    /// Deserialize `value` as `T`, reporting every bad field rather than only the first: after an
    /// error in a field of a mapping, that field is dropped and deserialization is tried again.
    pub(super) fn de<T: DeserializeOwned>(&mut self, value: &Value, path: &str) -> Option<T> {
        let mut current = Cow::Borrowed(value);
        let mut removed: Vec<String> = Vec::new();
        loop {
            let err = match serde_path_to_error::deserialize::<_, T>(current.as_ref()) {
                Ok(v) if removed.is_empty() => return Some(v),
                Ok(_) => return None,
                Err(e) => e,
            };
            self.typed_ok = false;
            let message = err.inner().to_string();
            let at = join_serde_path(path, err.path());
            if let Some(field) = missing_field(&message) {
                let caused_by_removal =
                    err.path().iter().len() == 0 && removed.iter().any(|r| r == field);
                if !caused_by_removal {
                    self.problem(
                        join(&at, field),
                        format!("required field \"{field}\" is missing"),
                    );
                }
                return None;
            }
            self.problem(at, humanize(&message));
            let Some(serde_path_to_error::Segment::Map { key }) = err.path().iter().next() else {
                return None;
            };
            let Value::Object(map) = current.to_mut() else {
                return None;
            };
            map.remove(key)?;
            removed.push(key.clone());
        }
    }

    /// An optional field: `None` when absent or when it was reported as bad.
    fn opt<T: DeserializeOwned>(
        &mut self,
        obj: &Map<String, Value>,
        name: &str,
        parent: &str,
    ) -> Option<T> {
        let v = obj.get(name)?;
        self.de(v, &join(parent, name))
    }

    /// A required field: reported when absent.
    fn req<T: DeserializeOwned>(
        &mut self,
        obj: &Map<String, Value>,
        name: &str,
        parent: &str,
        hint: &str,
    ) -> Option<T> {
        if !obj.contains_key(name) {
            self.fail(
                join(parent, name),
                format!("required field \"{name}\" is missing{hint}"),
            );
            return None;
        }
        self.opt(obj, name, parent)
    }

    /// Report fields of `obj` not in `allowed`. `what` names the thing for the message
    /// ("agent steps", "retry"); `elsewhere` says where a misplaced field would belong.
    fn unknown_fields(
        &mut self,
        obj: &Map<String, Value>,
        parent: &str,
        allowed: &[&str],
        what: &str,
        elsewhere: &dyn Fn(&str) -> Option<String>,
    ) {
        for key in obj.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let message = if key == "<<" {
                "YAML merge keys (<<) are not supported; write the fields out in full".to_string()
            } else if let Some(home) = elsewhere(key) {
                format!("field \"{key}\" does not apply to {what} ({home})")
            } else {
                let hint = did_you_mean(key, allowed.iter().copied());
                if hint.is_empty() {
                    format!(
                        "unknown field \"{key}\"; {what} take: {}",
                        list(allowed.iter().copied())
                    )
                } else {
                    format!("unknown field \"{key}\"{hint}")
                }
            };
            self.problem(join(parent, key), message);
        }
    }

    /// `obj[name]` as a mapping, or a reported problem.
    fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        what: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.fail(path, format!("expected {what}, found {}", describe(other)));
                None
            }
        }
    }

    fn inputs(&mut self, v: Option<&Value>) -> BTreeMap<String, InputSpec> {
        let mut out = BTreeMap::new();
        let Some(v) = v else { return out };
        let Some(map) = self.object(
            v,
            "inputs",
            "a mapping of input name to its type, like `issue: {type: string}`",
        ) else {
            return out;
        };
        for (name, spec) in map {
            let path = join("inputs", name);
            let Some(obj) = self.object(
                spec,
                &path,
                "a mapping with at least `type`, like `{type: string, required: true}`",
            ) else {
                continue;
            };
            self.unknown_fields(obj, &path, fields::input_spec(), "inputs", &|_| None);
            if !obj.contains_key("type") {
                self.fail(
                    join(&path, "type"),
                    "required field \"type\" is missing; use one of string, number, integer, boolean, object, array",
                );
                continue;
            }
            if let Some(spec) = self.de::<InputSpec>(spec, &path) {
                out.insert(name.clone(), spec);
            }
        }
        out
    }

    fn steps(&mut self, v: Option<&Value>) -> Vec<StepDef> {
        let items = match v {
            None => {
                self.fail(
                    "steps",
                    "required field \"steps\" is missing; list the workflow's steps under steps",
                );
                return Vec::new();
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.fail(
                    "steps",
                    format!("expected a list of steps, found {}", describe(other)),
                );
                return Vec::new();
            }
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.step(item, &index("steps", i)))
            .collect()
    }

    /// The kind named by `obj.kind`, or a reported problem.
    fn kind(&mut self, obj: &Map<String, Value>, parent: &str) -> Option<StepKind> {
        let path = join(parent, "kind");
        let kinds = list(fields::STEP_KINDS);
        match obj.get("kind") {
            None => self.fail(
                path,
                format!("required field \"kind\" is missing; set it to one of {kinds}"),
            ),
            Some(Value::String(name)) => match fields::step_kind(name) {
                Some(kind) => return Some(kind),
                None => self.fail(
                    path,
                    format!(
                        "unknown step kind \"{name}\"{}; use one of {kinds}",
                        did_you_mean(name, fields::STEP_KINDS)
                    ),
                ),
            },
            Some(other) => self.fail(
                path,
                format!("expected one of {kinds}, found {}", describe(other)),
            ),
        }
        None
    }

    fn step(&mut self, v: &Value, path: &str) -> Option<StepDef> {
        let obj = self.object(v, path, "a step: a mapping with at least id and kind")?;
        let kind = self.kind(obj, path);
        match kind {
            Some(kind) => {
                let allowed: Vec<&str> = fields::STEP_COMMON
                    .iter()
                    .chain(fields::action(kind))
                    .copied()
                    .collect();
                let what = format!("{} steps", kind.as_str());
                self.unknown_fields(obj, path, &allowed, &what, &|key| belongs_to(key, kind));
            }
            None => {
                // Without a valid kind only fields that no kind accepts are certainly wrong.
                let allowed: Vec<&str> = fields::STEP_COMMON
                    .iter()
                    .copied()
                    .chain(StepKind::ALL.into_iter().flat_map(fields::action).copied())
                    .collect();
                self.unknown_fields(obj, path, &allowed, "steps", &|_| None);
            }
        }

        let id = self.req::<String>(obj, "id", path, "; give the step an id like \"build\"");
        let name = self.opt::<Option<String>>(obj, "name", path).flatten();
        let depends_on = self
            .opt::<Vec<String>>(obj, "depends_on", path)
            .unwrap_or_default();
        let when = self.opt::<When>(obj, "when", path).unwrap_or_default();
        let timeout = self
            .opt::<Option<DurationSpec>>(obj, "timeout", path)
            .flatten();
        let retry = self.retry(obj.get("retry"), &join(path, "retry"));
        let continue_on_failure = self
            .opt::<bool>(obj, "continue_on_failure", path)
            .unwrap_or(false);
        let compensate = self.compensate(obj.get("compensate"), &join(path, "compensate"));
        let action = self.action(kind?, obj, path)?;
        Some(StepDef {
            id: id.unwrap_or_default(),
            name,
            action,
            depends_on,
            when,
            timeout,
            retry,
            continue_on_failure,
            compensate,
        })
    }

    fn retry(&mut self, v: Option<&Value>, path: &str) -> Option<RetryPolicy> {
        let v = v?;
        if let Value::Object(obj) = v {
            self.unknown_fields(obj, path, fields::retry(), "retry", &|_| None);
        }
        self.de::<Option<RetryPolicy>>(v, path).flatten()
    }

    fn compensate(&mut self, v: Option<&Value>, path: &str) -> Option<StepAction> {
        let v = v?;
        if v.is_null() {
            return None;
        }
        let obj = self.object(
            v,
            path,
            "an action: a mapping with kind and that kind's fields",
        )?;
        let kind = self.kind(obj, path);
        let allowed: Vec<&str> = match kind {
            Some(k) => std::iter::once("kind")
                .chain(fields::action(k).iter().copied())
                .collect(),
            None => std::iter::once("kind")
                .chain(StepKind::ALL.into_iter().flat_map(fields::action).copied())
                .collect(),
        };
        let what = match kind {
            Some(k) => format!("{} compensate actions", k.as_str()),
            None => "compensate actions".to_string(),
        };
        self.unknown_fields(obj, path, &allowed, &what, &|key| {
            fields::STEP_COMMON.contains(&key).then(|| {
                "a compensate block holds only kind and the action's own fields".to_string()
            })
        });
        self.action(kind?, obj, path)
    }

    /// Deserialize the fields of `kind`'s action out of `obj` (which may hold other fields).
    fn action(
        &mut self,
        kind: StepKind,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<StepAction> {
        let required = fields::action_required(kind);
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|f| !obj.contains_key(*f))
            .collect();
        for field in &missing {
            self.fail(
                join(path, field),
                format!(
                    "required field \"{field}\" is missing; {} actions need {}",
                    kind.as_str(),
                    list(required.iter().copied())
                ),
            );
        }
        if !missing.is_empty() {
            // Still look for type errors in the fields that are there.
            for field in fields::action(kind) {
                if !required.contains(field)
                    && let Some(v) = obj.get(*field)
                {
                    self.action_field(kind, field, v, path);
                }
            }
            return None;
        }
        let own = fields::action(kind);
        let sub = Value::Object(
            obj.iter()
                .filter(|(k, _)| own.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        match kind {
            StepKind::Agent => self.de::<AgentAction>(&sub, path).map(StepAction::Agent),
            StepKind::Approval => self
                .de::<ApprovalAction>(&sub, path)
                .map(StepAction::Approval),
            StepKind::Notify => self.de::<NotifyAction>(&sub, path).map(StepAction::Notify),
            StepKind::Http => self.de::<HttpAction>(&sub, path).map(StepAction::Http),
            StepKind::Wait => self.de::<WaitAction>(&sub, path).map(StepAction::Wait),
        }
    }

    /// Check one optional action field on its own, by deserializing the action with valid
    /// placeholders for the required fields (whose absence was already reported).
    fn action_field(&mut self, kind: StepKind, field: &str, value: &Value, path: &str) {
        let mut probe: Map<String, Value> = fields::action_required(kind)
            .iter()
            .map(|f| {
                let placeholder = match *f {
                    "duration" => Value::from(1),
                    "url" => Value::from("https://example.com"),
                    _ => Value::from("x"),
                };
                (f.to_string(), placeholder)
            })
            .collect();
        probe.insert(field.to_string(), value.clone());
        let probe = Value::Object(probe);
        let _ = match kind {
            StepKind::Agent => self.de::<AgentAction>(&probe, path).map(StepAction::Agent),
            StepKind::Approval => self
                .de::<ApprovalAction>(&probe, path)
                .map(StepAction::Approval),
            StepKind::Notify => self
                .de::<NotifyAction>(&probe, path)
                .map(StepAction::Notify),
            StepKind::Http => self.de::<HttpAction>(&probe, path).map(StepAction::Http),
            StepKind::Wait => self.de::<WaitAction>(&probe, path).map(StepAction::Wait),
        };
    }

    fn list_of<'v>(&mut self, v: Option<&'v Value>, path: &str, what: &str) -> &'v [Value] {
        match v {
            None => &[],
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.fail(
                    path,
                    format!("expected a list of {what}, found {}", describe(other)),
                );
                &[]
            }
        }
    }

    fn triggers(&mut self, v: Option<&Value>) -> Vec<TriggerDef> {
        let items = self.list_of(v, "triggers", "triggers");
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = index("triggers", i);
            if let Some(t) = self.trigger(item, &path) {
                out.push(t);
            }
        }
        out
    }

    fn trigger(&mut self, v: &Value, path: &str) -> Option<TriggerDef> {
        let obj = self.object(v, path, "a trigger: a mapping with a type")?;
        let types = list(fields::TRIGGER_TYPES);
        let table: &[FieldSpec] = match obj.get("type") {
            None => {
                self.fail(
                    join(path, "type"),
                    format!("required field \"type\" is missing; set it to one of {types}"),
                );
                return None;
            }
            Some(Value::String(t)) => match fields::trigger(t) {
                Some(table) => table,
                None => {
                    self.fail(
                        join(path, "type"),
                        format!(
                            "unknown trigger type \"{t}\"{}; use one of {types}",
                            did_you_mean(t, fields::TRIGGER_TYPES)
                        ),
                    );
                    return None;
                }
            },
            Some(other) => {
                self.fail(
                    join(path, "type"),
                    format!("expected one of {types}, found {}", describe(other)),
                );
                return None;
            }
        };
        let type_name = obj.get("type").and_then(Value::as_str).unwrap_or_default();
        let allowed: Vec<&str> = std::iter::once("type")
            .chain(table.iter().map(|f| f.name))
            .collect();
        let what = format!("{type_name} triggers");
        self.unknown_fields(obj, path, &allowed, &what, &|key| {
            fields::TRIGGER_TYPES
                .iter()
                .filter(|t| **t != type_name)
                .find(|t| fields::trigger(t).is_some_and(|tab| tab.iter().any(|f| f.name == key)))
                .map(|t| format!("it belongs to {t} triggers"))
        });
        let before = self.problems.len();
        let was_ok = self.typed_ok;
        self.typed_ok = true;
        for field in table {
            match obj.get(field.name) {
                Some(value) => (field.check)(self, value, &join(path, field.name)),
                None if field.required => {
                    self.fail(
                        join(path, field.name),
                        format!("required field \"{}\" is missing", field.name),
                    );
                }
                None => {}
            }
        }
        let pieces_ok = self.typed_ok;
        self.typed_ok &= was_ok;
        if !pieces_ok {
            return None;
        }
        match TriggerDef::deserialize(v) {
            Ok(t) => Some(t),
            Err(e) => {
                // Not expected once every field checked out; report rather than lose it.
                if self.problems.len() == before {
                    self.fail(path, humanize(&e.to_string()));
                }
                None
            }
        }
    }

    fn notifications(&mut self, v: Option<&Value>) -> Vec<NotificationDef> {
        let items = self.list_of(v, "notifications", "notifications");
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = index("notifications", i);
            let Some(obj) = self.object(
                item,
                &path,
                "a notification: a mapping with events and a target",
            ) else {
                continue;
            };
            self.unknown_fields(obj, &path, fields::notification(), "notifications", &|_| {
                None
            });
            if let Some(n) = self.de::<NotificationDef>(item, &path) {
                out.push(n);
            }
        }
        out
    }
}

/// For a field that `kind` does not take but another kind does: where it belongs.
fn belongs_to(key: &str, kind: StepKind) -> Option<String> {
    let owners: Vec<&str> = StepKind::ALL
        .into_iter()
        .filter(|k| *k != kind && fields::action(*k).contains(&key))
        .map(StepKind::as_str)
        .collect();
    (!owners.is_empty()).then(|| format!("it belongs to {} steps", owners.join(" and ")))
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// Walk the document, report every structural problem, and build the typed definition when all
/// pieces deserialized (unknown fields alone do not prevent it).
pub(super) fn build(doc: &Value, problems: &mut Vec<Problem>) -> Option<WorkflowDefinition> {
    let mut w = Walk {
        problems,
        typed_ok: true,
    };
    let root = match doc {
        Value::Object(root) => root,
        Value::Null => {
            w.fail(
                "",
                "the definition is empty; write a mapping with at least id and steps",
            );
            return None;
        }
        other => {
            w.fail(
                "",
                format!(
                    "a workflow definition must be a mapping with at least id and steps, found {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    w.unknown_fields(
        root,
        "",
        fields::workflow(),
        "workflow definitions",
        &|key| {
            fields::STEP_COMMON
                .contains(&key)
                .then(|| "step fields go inside an item of steps".to_string())
        },
    );
    let id = w.req::<String>(
        root,
        "id",
        "",
        "; give the workflow an id like \"nightly-tests\"",
    );
    let name = w.opt::<Option<String>>(root, "name", "").flatten();
    let description = w.opt::<Option<String>>(root, "description", "").flatten();
    let inputs = w.inputs(root.get("inputs"));
    let steps = w.steps(root.get("steps"));
    let triggers = w.triggers(root.get("triggers"));
    let notifications = w.notifications(root.get("notifications"));
    let timeout = w.opt::<Option<DurationSpec>>(root, "timeout", "").flatten();
    let outputs = w
        .opt::<BTreeMap<String, String>>(root, "outputs", "")
        .unwrap_or_default();
    let polling = w
        .opt::<Option<PollingPolicy>>(root, "polling", "")
        .flatten();
    let budget = w.opt::<Option<Budget>>(root, "budget", "").flatten();
    let concurrency = w
        .opt::<Option<ConcurrencyLimit>>(root, "concurrency", "")
        .flatten();
    if !w.typed_ok {
        return None;
    }
    Some(WorkflowDefinition {
        id: id.unwrap_or_default(),
        name,
        description,
        inputs,
        steps,
        triggers,
        notifications,
        timeout,
        outputs,
        polling,
        budget,
        concurrency,
    })
}
