//! Parsing and validation of workflow definitions.
//!
//! Definitions are written by people and fixed by people, so validation reports *every* problem
//! in one pass, each with a path into the document (`steps[2].depends_on[0]`) and a message that
//! says how to fix it. It runs in two layers:
//!
//! 1. [`parse_definition_value`] walks the raw document: unknown fields, missing or unknown
//!    `kind`s, and type errors, each piece deserialized on its own so one bad field hides nothing
//!    (see `document.rs`).
//! 2. [`validate`] checks the typed definition: ids, the dependency graph (unknown, duplicate and
//!    cyclic dependencies), ranges, templates, triggers and notifications (see `semantic.rs`).
//!
//! Layer 2 runs whenever every piece could be typed (unknown fields alone do not stop it), so a
//! typo'd field and a dependency cycle are reported together.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use super::WorkflowDefinition;

mod document;
mod fields;
mod schedule;
mod semantic;
mod support;

use document::Walk;

/// One problem with a definition: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// e.g. `steps[2].depends_on[0]`; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a definition. `Display` lists them all, one per line, as
/// `path: message`, so a CLI or log shows the whole picture at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", list_problems(.0))]
pub struct ValidationErrors(pub Vec<Problem>);

impl ValidationErrors {
    pub fn problems(&self) -> &[Problem] {
        &self.0
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let mut out = match problems.len() {
        1 => "the workflow definition has 1 problem; fix it and try again:".to_string(),
        n => format!("the workflow definition has {n} problems; fix them and try again:"),
    };
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

/// Parse YAML or JSON text into a validated definition, or return every problem found.
///
/// Text starting with `{` is read as JSON, anything else as YAML. A syntax error is a single
/// problem with an empty path and the line and column in its message.
pub fn parse_definition(text: &str) -> Result<WorkflowDefinition, ValidationErrors> {
    let doc = document::parse_text(text).map_err(|p| ValidationErrors(vec![p]))?;
    parse_definition_value(&doc)
}

/// Validate an already-parsed document and build the typed definition.
pub fn parse_definition_value(v: &Value) -> Result<WorkflowDefinition, ValidationErrors> {
    let mut problems = Vec::new();
    let def = document::build(v, &mut problems);
    if let Some(def) = &def {
        problems.extend(validate(def));
    }
    match def {
        Some(def) if problems.is_empty() => Ok(def),
        _ => {
            sort_problems(&mut problems);
            Err(ValidationErrors(problems))
        }
    }
}

/// Semantic checks on a typed definition (ids, dependencies, ranges, templates, triggers,
/// notifications). Empty when the definition is good. Use this for definitions built in code;
/// text goes through [`parse_definition`], which also calls it.
pub fn validate(def: &WorkflowDefinition) -> Vec<Problem> {
    let mut problems = semantic::check(def);
    sort_problems(&mut problems);
    problems
}

/// Order problems the way the document reads: by top-level field (in the schema's order), then
/// by item index, keeping the order checks found them in otherwise. Deterministic either way.
fn sort_problems(problems: &mut [Problem]) {
    let top = fields::workflow();
    problems.sort_by_cached_key(|p| {
        if p.path.is_empty() {
            return (0, None);
        }
        let head_end = p.path.find(['.', '[']).unwrap_or(p.path.len());
        let head = &p.path[..head_end];
        let rank = top
            .iter()
            .position(|f| *f == head)
            .map_or(top.len() + 1, |i| i + 1);
        let item = p.path[head_end..]
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(n, _)| n.parse::<usize>().ok());
        (rank, item)
    });
}

/// The ids of every step `id` depends on, directly or through other steps (not `id` itself).
/// Empty for an unknown id. These are the steps whose outputs `id`'s templates may read.
pub fn upstream_steps<'d>(def: &'d WorkflowDefinition, id: &str) -> BTreeSet<&'d str> {
    let mut seen: BTreeSet<&'d str> = BTreeSet::new();
    let mut stack: Vec<&'d str> = def
        .step(id)
        .map(|s| s.depends_on.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(dep) = stack.pop() {
        if dep == id || !seen.insert(dep) {
            continue;
        }
        if let Some(s) = def.step(dep) {
            stack.extend(s.depends_on.iter().map(String::as_str));
        }
    }
    seen.retain(|s| def.step(s).is_some());
    seen
}

/// Check run inputs against the definition: types, required, defaults filled, unknown names.
///
/// An explicit `null` counts as not given (so a default applies), which is what JSON clients
/// that serialize absent optionals as `null` mean. Problems have paths `inputs.<name>`.
pub fn resolve_inputs(
    def: &WorkflowDefinition,
    provided: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut out = Map::new();
    for (name, value) in provided {
        let path = format!("inputs.{name}");
        let Some(spec) = def.inputs.get(name) else {
            let declared = def.inputs.keys().map(String::as_str);
            let message = if def.inputs.is_empty() {
                format!("unknown input \"{name}\"; this workflow takes no inputs")
            } else {
                format!(
                    "unknown input \"{name}\"; this workflow takes: {}{}",
                    support::list(declared.clone()),
                    support::did_you_mean(name, declared)
                )
            };
            problems.push(Problem { path, message });
            continue;
        };
        if value.is_null() {
            continue;
        }
        if spec.kind.accepts(value) {
            out.insert(name.clone(), value.clone());
        } else {
            problems.push(Problem {
                path,
                message: format!(
                    "expected {} {}, found {}",
                    article(spec.kind.as_str()),
                    spec.kind.as_str(),
                    support::describe(value)
                ),
            });
        }
    }
    for (name, spec) in &def.inputs {
        let given = provided.get(name).is_some_and(|v| !v.is_null());
        if given {
            continue;
        }
        if let Some(default) = &spec.default {
            out.insert(name.clone(), default.clone());
        } else if spec.required {
            problems.push(Problem {
                path: format!("inputs.{name}"),
                message: format!("required input \"{name}\" is missing"),
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Err(problems)
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}
