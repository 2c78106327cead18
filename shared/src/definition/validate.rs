//! Parsing and validation of workflow definitions (stub; being written).

use serde_json::{Map, Value};

use super::WorkflowDefinition;

/// One problem with a definition: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// e.g. `steps[2].depends_on[0]`; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

/// Every problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in the workflow definition", .0.len())]
pub struct ValidationErrors(pub Vec<Problem>);

/// Parse YAML or JSON text into a validated definition, or return every problem found.
pub fn parse_definition(text: &str) -> Result<WorkflowDefinition, ValidationErrors> {
    let v: Value = serde_norway::from_str(text).map_err(|e| {
        ValidationErrors(vec![Problem {
            path: String::new(),
            message: e.to_string(),
        }])
    })?;
    parse_definition_value(&v)
}

/// Validate an already-parsed document and build the typed definition.
pub fn parse_definition_value(v: &Value) -> Result<WorkflowDefinition, ValidationErrors> {
    serde_json::from_value(v.clone()).map_err(|e| {
        ValidationErrors(vec![Problem {
            path: String::new(),
            message: e.to_string(),
        }])
    })
}

/// Semantic checks on a typed definition.
pub fn validate(def: &WorkflowDefinition) -> Vec<Problem> {
    let _ = def;
    Vec::new()
}

/// Check run inputs against the definition: types, required, defaults filled, unknown names.
pub fn resolve_inputs(
    def: &WorkflowDefinition,
    provided: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Problem>> {
    let _ = def;
    Ok(provided.clone())
}
