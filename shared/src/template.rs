//! Templates in step parameters: `${{ inputs.name }}`, `${{ steps.<id>.output }}`,
//! `${{ steps.<id>.output.field.sub }}`, `${{ steps.<id>.status }}`, `${{ run.id }}`,
//! `${{ run.workflow }}`.
//!
//! Completion templates (the `inputs` of a `workflow_completed` trigger, rendered with
//! [`render_completion`] against the run that finished) may also read how that run ended:
//! `${{ run.status }}`, `${{ run.error }}`, `${{ run.outputs }}` and `${{ run.outputs.name[.field] }}`.
//! Step templates may not: while a run is running it has no status worth branching on and no
//! outputs yet, so such a reference in a step is refused instead of quietly rendering empty.
//!
//! The language is deliberately tiny: a template only *reads* values (no expressions, filters or
//! conditionals), so a definition can be checked completely before it runs — every reference is
//! known statically (see [`references`]) and validation can prove each one names a declared input
//! or an upstream step. At run time rendering never fails because of data: anything absent (a
//! skipped step, a field the output lacks, an optional input nobody gave) renders as the empty
//! string, so a `when: always` report step still produces a message.
//!
//! The scanner is hand-written (no regex) because the engine renders templates on every step start.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::model::{Run, StepState};

/// Opening delimiter of a template expression.
const OPEN: &str = "${{";
/// Closing delimiter of a template expression.
const CLOSE: &str = "}}";

/// What a template expression names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `inputs.<name>`
    Input(String),
    /// `steps.<id>.output[.a.b]`
    StepOutput { step: String, path: Vec<String> },
    /// `steps.<id>.status`
    StepStatus(String),
    /// `run.<field>` (`id`, `workflow`; in completion templates also `status`, `error`,
    /// `outputs[.name.field]`)
    Run(String),
}

impl Reference {
    /// The step this reference reads, if it reads one.
    pub fn step(&self) -> Option<&str> {
        match self {
            Self::StepOutput { step, .. } | Self::StepStatus(step) => Some(step),
            Self::Input(_) | Self::Run(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed template expression starting at byte {0}; close it with `}}}}`")]
    Unclosed(usize),
    #[error(
        "template expression {0:?} is not one of inputs.<name>, steps.<id>.output[.field], steps.<id>.status, run.id, run.workflow"
    )]
    BadExpression(String),
    #[error(
        "template expression {0:?} is not one of run.outputs[.name[.field]], run.status, run.error, run.id, run.workflow, inputs.<name>, steps.<id>.output[.field], steps.<id>.status (all about the run that finished)"
    )]
    BadCompletionExpression(String),
}

/// Which expressions a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// Step parameters and run outputs, rendered while the run is running.
    Step,
    /// A `workflow_completed` trigger's inputs, rendered against the finished run.
    Completion,
}

/// How a finished run ended, for completion templates.
#[derive(Debug, Clone, Copy)]
struct Finished<'a> {
    status: &'a str,
    error: Option<&'a str>,
    outputs: &'a Map<String, Value>,
}

/// What a template is rendered against.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext<'a> {
    pub run_id: &'a str,
    pub workflow_id: &'a str,
    pub inputs: &'a Map<String, Value>,
    pub steps: &'a BTreeMap<String, StepState>,
}

/// A parsed expression borrowing from the template text, so rendering allocates nothing per
/// expression beyond the output string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expr<'t> {
    Input(&'t str),
    /// `field_path` is the dotted remainder after `output` (empty for the whole output).
    StepOutput {
        step: &'t str,
        field_path: &'t str,
    },
    StepStatus(&'t str),
    RunId,
    RunWorkflow,
    RunStatus,
    RunError,
    /// `field_path` is the dotted remainder after `outputs` (empty for all outputs).
    RunOutput {
        field_path: &'t str,
    },
}

impl Expr<'_> {
    fn to_reference(self) -> Reference {
        match self {
            Self::Input(name) => Reference::Input(name.to_string()),
            Self::StepOutput { step, field_path } => Reference::StepOutput {
                step: step.to_string(),
                path: if field_path.is_empty() {
                    Vec::new()
                } else {
                    field_path.split('.').map(str::to_string).collect()
                },
            },
            Self::StepStatus(step) => Reference::StepStatus(step.to_string()),
            Self::RunId => Reference::Run("id".to_string()),
            Self::RunWorkflow => Reference::Run("workflow".to_string()),
            Self::RunStatus => Reference::Run("status".to_string()),
            Self::RunError => Reference::Run("error".to_string()),
            Self::RunOutput { field_path: "" } => Reference::Run("outputs".to_string()),
            Self::RunOutput { field_path } => Reference::Run(format!("outputs.{field_path}")),
        }
    }
}

/// One piece of a template: literal text or an expression.
enum Piece<'t> {
    Text(&'t str),
    Expr(Expr<'t>),
}

/// Walks a template left to right, yielding literal text and parsed expressions.
struct Scanner<'t> {
    text: &'t str,
    pos: usize,
    dialect: Dialect,
}

impl<'t> Scanner<'t> {
    fn new(text: &'t str) -> Self {
        Self::with(text, Dialect::Step)
    }

    fn with(text: &'t str, dialect: Dialect) -> Self {
        Self {
            text,
            pos: 0,
            dialect,
        }
    }
}

impl<'t> Iterator for Scanner<'t> {
    type Item = Result<Piece<'t>, TemplateError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.text.get(self.pos..).filter(|r| !r.is_empty())?;
        let Some(open) = rest.find(OPEN) else {
            self.pos = self.text.len();
            return Some(Ok(Piece::Text(rest)));
        };
        if open > 0 {
            self.pos += open;
            return Some(Ok(Piece::Text(&rest[..open])));
        }
        let start = self.pos;
        let inner_start = start + OPEN.len();
        let after_open = &self.text[inner_start..];
        let Some(close) = after_open.find(CLOSE) else {
            // Stop scanning: the rest of the text cannot be interpreted.
            self.pos = self.text.len();
            return Some(Err(TemplateError::Unclosed(start)));
        };
        self.pos = inner_start + close + CLOSE.len();
        Some(parse_expr(after_open[..close].trim(), self.dialect).map(Piece::Expr))
    }
}

/// Segment characters: step ids, input names and output field names.
fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_expr(expr: &str, dialect: Dialect) -> Result<Expr<'_>, TemplateError> {
    let bad = || match dialect {
        Dialect::Step => TemplateError::BadExpression(expr.to_string()),
        Dialect::Completion => TemplateError::BadCompletionExpression(expr.to_string()),
    };
    let (head, rest) = expr.split_once('.').ok_or_else(bad)?;
    let completion = dialect == Dialect::Completion;
    match head {
        "inputs" if is_segment(rest) => Ok(Expr::Input(rest)),
        "run" => match rest.split_once('.') {
            None if rest == "id" => Ok(Expr::RunId),
            None if rest == "workflow" => Ok(Expr::RunWorkflow),
            None if completion && rest == "status" => Ok(Expr::RunStatus),
            None if completion && rest == "error" => Ok(Expr::RunError),
            None if completion && rest == "outputs" => Ok(Expr::RunOutput { field_path: "" }),
            Some(("outputs", field_path))
                if completion && field_path.split('.').all(is_segment) =>
            {
                Ok(Expr::RunOutput { field_path })
            }
            _ => Err(bad()),
        },
        "steps" => {
            let (step, what) = rest.split_once('.').ok_or_else(bad)?;
            if !is_segment(step) {
                return Err(bad());
            }
            match what.split_once('.') {
                None if what == "output" => Ok(Expr::StepOutput {
                    step,
                    field_path: "",
                }),
                None if what == "status" => Ok(Expr::StepStatus(step)),
                Some(("output", field_path)) if field_path.split('.').all(is_segment) => {
                    Ok(Expr::StepOutput { step, field_path })
                }
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// Every reference in `text`, or the first syntax error.
pub fn references(text: &str) -> Result<Vec<Reference>, TemplateError> {
    let mut refs = Vec::new();
    for piece in Scanner::new(text) {
        if let Piece::Expr(expr) = piece? {
            refs.push(expr.to_reference());
        }
    }
    Ok(refs)
}

/// Check a completion template (a `workflow_completed` trigger's input) without rendering it.
pub fn check_completion(text: &str) -> Result<(), TemplateError> {
    Scanner::with(text, Dialect::Completion).try_for_each(|piece| piece.map(drop))
}

/// Render a completion template (a `workflow_completed` trigger's input) against `run`, the run
/// that finished: see the module docs for what it may read.
///
/// A template that is exactly one expression yields the value itself, so a number or an
/// object reaches a typed input as such, and something absent yields JSON `null` (the input
/// then counts as not given: its default applies, or a required one is reported missing,
/// instead of starting the next run with an empty string). Any other template renders to a
/// string as [`render`] does.
pub fn render_completion(text: &str, run: &Run) -> Result<Value, TemplateError> {
    let ctx = TemplateContext {
        run_id: &run.id,
        workflow_id: &run.workflow_id,
        inputs: &run.inputs,
        steps: &run.steps,
    };
    let finished = Finished {
        status: run.status.as_str(),
        error: run.error.as_deref(),
        outputs: &run.outputs,
    };
    let pieces: Vec<Piece<'_>> =
        Scanner::with(text, Dialect::Completion).collect::<Result<_, _>>()?;
    if let [Piece::Expr(expr)] = pieces.as_slice() {
        return Ok(value_of(*expr, &ctx, &finished));
    }
    let mut out = String::with_capacity(text.len() + 64);
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(expr) => write_expr(&mut out, expr, &ctx, Some(&finished)),
        }
    }
    Ok(Value::String(out))
}

/// The value a single-expression completion template stands for (`null` when absent).
fn value_of(expr: Expr<'_>, ctx: &TemplateContext<'_>, finished: &Finished<'_>) -> Value {
    let found = match expr {
        Expr::Input(name) => ctx.inputs.get(name).cloned(),
        Expr::StepOutput { step, field_path } => ctx
            .steps
            .get(step)
            .and_then(|s| s.output.as_ref())
            .and_then(|v| lookup(v, field_path))
            .cloned(),
        Expr::StepStatus(step) => ctx.steps.get(step).map(|s| Value::from(s.status.as_str())),
        Expr::RunId => Some(Value::from(ctx.run_id)),
        Expr::RunWorkflow => Some(Value::from(ctx.workflow_id)),
        Expr::RunStatus => Some(Value::from(finished.status)),
        Expr::RunError => finished.error.map(Value::from),
        Expr::RunOutput { field_path } => lookup_outputs(finished.outputs, field_path),
    };
    found.unwrap_or(Value::Null)
}

/// A run output (or all of them) by dotted path.
fn lookup_outputs(outputs: &Map<String, Value>, field_path: &str) -> Option<Value> {
    match field_path.split_once('.') {
        _ if field_path.is_empty() => Some(Value::Object(outputs.clone())),
        None => outputs.get(field_path).cloned(),
        Some((name, rest)) => outputs.get(name).and_then(|v| lookup(v, rest)).cloned(),
    }
}

/// Whether `text` contains a template expression at all (cheap pre-check).
pub fn is_templated(text: &str) -> bool {
    text.contains(OPEN)
}

/// Render `text`: strings are inserted as they are, other JSON values compactly; a reference to
/// something absent (a skipped step's output) renders as the empty string. JSON `null` counts as
/// absent, so an optional field that is `null` does not print the word "null" into a prompt.
pub fn render(text: &str, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
    if !is_templated(text) {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len() + 64);
    for piece in Scanner::new(text) {
        match piece? {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(expr) => write_expr(&mut out, expr, ctx, None),
        }
    }
    Ok(out)
}

/// Render every string leaf of a JSON value (object keys are left untouched).
pub fn render_value(value: &Value, ctx: &TemplateContext<'_>) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => Value::String(render(s, ctx)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), render_value(v, ctx)?);
            }
            Value::Object(out)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
    })
}

/// Append what `expr` names; `finished` is there for completion templates only (step
/// templates cannot parse the expressions that need it).
fn write_expr(
    out: &mut String,
    expr: Expr<'_>,
    ctx: &TemplateContext<'_>,
    finished: Option<&Finished<'_>>,
) {
    match expr {
        Expr::Input(name) => write_json(out, ctx.inputs.get(name)),
        Expr::StepOutput { step, field_path } => {
            let output = ctx.steps.get(step).and_then(|s| s.output.as_ref());
            write_json(out, output.and_then(|v| lookup(v, field_path)));
        }
        Expr::StepStatus(step) => {
            if let Some(state) = ctx.steps.get(step) {
                out.push_str(state.status.as_str());
            }
        }
        Expr::RunId => out.push_str(ctx.run_id),
        Expr::RunWorkflow => out.push_str(ctx.workflow_id),
        Expr::RunStatus | Expr::RunError | Expr::RunOutput { .. } => {
            if let Some(finished) = finished {
                write_json(out, Some(&value_of(expr, ctx, finished)));
            }
        }
    }
}

/// Follow a dotted path into a JSON value: object fields by name, array items by index.
fn lookup<'v>(value: &'v Value, field_path: &str) -> Option<&'v Value> {
    if field_path.is_empty() {
        return Some(value);
    }
    field_path
        .split('.')
        .try_fold(value, |current, segment| match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

fn write_json(out: &mut String, value: Option<&Value>) {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push_str(s),
        // `Display` for `Value` is compact JSON; writing to a String cannot fail.
        Some(other) => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::StepStatus;

    fn state(status: StepStatus, output: Option<Value>) -> StepState {
        StepState {
            status,
            output,
            ..StepState::default()
        }
    }

    struct Fixture {
        inputs: Map<String, Value>,
        steps: BTreeMap<String, StepState>,
    }

    impl Fixture {
        fn new() -> Self {
            let Value::Object(inputs) = json!({
                "issue": "Add retries to the uploader",
                "count": 3,
                "flags": {"fast": true},
                "nothing": null,
            }) else {
                panic!("inputs fixture must be an object");
            };
            let mut steps = BTreeMap::new();
            steps.insert(
                "architect".to_string(),
                state(
                    StepStatus::Succeeded,
                    Some(json!({
                        "design": "use a token bucket",
                        "files": ["a.rs", "b.rs"],
                        "meta": {"score": 0.9, "tags": {"area": "net"}},
                    })),
                ),
            );
            steps.insert(
                "unit-tests_2".to_string(),
                state(StepStatus::Failed, Some(json!("3 tests failed"))),
            );
            steps.insert("review".to_string(), state(StepStatus::Skipped, None));
            Self { inputs, steps }
        }

        fn ctx(&self) -> TemplateContext<'_> {
            TemplateContext {
                run_id: "run-123",
                workflow_id: "ship-it",
                inputs: &self.inputs,
                steps: &self.steps,
            }
        }

        fn render(&self, text: &str) -> String {
            match render(text, &self.ctx()) {
                Ok(s) => s,
                Err(e) => panic!("render {text:?} failed: {e}"),
            }
        }
    }

    #[test]
    fn references_are_listed_in_order() {
        let refs = references(
            "Do ${{ inputs.issue }} using ${{steps.architect.output.meta.tags.area}}; \
             status ${{ steps.unit-tests_2.status }} in ${{ run.id }}/${{ run.workflow }} \
             from ${{ steps.architect.output }}",
        );
        assert_eq!(
            refs,
            Ok(vec![
                Reference::Input("issue".into()),
                Reference::StepOutput {
                    step: "architect".into(),
                    path: vec!["meta".into(), "tags".into(), "area".into()],
                },
                Reference::StepStatus("unit-tests_2".into()),
                Reference::Run("id".into()),
                Reference::Run("workflow".into()),
                Reference::StepOutput {
                    step: "architect".into(),
                    path: vec![],
                },
            ])
        );
        assert_eq!(references("no templates here"), Ok(vec![]));
        assert_eq!(references(""), Ok(vec![]));
        assert_eq!(
            Reference::StepStatus("a".into()).step(),
            Some("a"),
            "step() names the step read"
        );
        assert_eq!(Reference::Input("a".into()).step(), None);
    }

    #[test]
    fn whitespace_inside_braces_is_optional() {
        for text in [
            "${{inputs.issue}}",
            "${{ inputs.issue }}",
            "${{   inputs.issue\t}}",
            "${{\ninputs.issue\n}}",
        ] {
            assert_eq!(
                references(text),
                Ok(vec![Reference::Input("issue".into())]),
                "{text:?}"
            );
        }
    }

    #[test]
    fn unclosed_expression_reports_its_byte_offset() {
        assert_eq!(
            references("abc ${{ inputs.x"),
            Err(TemplateError::Unclosed(4))
        );
        // Offsets are bytes, not characters: "é" is two bytes.
        assert_eq!(
            references("é ${{ inputs.x }"),
            Err(TemplateError::Unclosed(3))
        );
        assert_eq!(
            references("${{ inputs.a }} then ${{ inputs.b"),
            Err(TemplateError::Unclosed(21))
        );
        let msg = TemplateError::Unclosed(4).to_string();
        assert!(msg.contains("byte 4") && msg.contains("`}}`"), "{msg}");
    }

    #[test]
    fn bad_expressions_are_refused() {
        for expr in [
            "",
            "inputs",
            "inputs.",
            "inputs.a.b",
            "inputs.a b",
            "input.a",
            "steps",
            "steps.a",
            "steps.a.outputs",
            "steps.a.output.",
            "steps.a.output..b",
            "steps.a.result",
            "steps..output",
            "steps.a.status.x",
            "run",
            "run.status",
            "run.id.x",
            "env.HOME",
            "inputs.x || 'default'",
            "${{ inputs.x",
        ] {
            let text = format!("${{{{ {expr} }}}}");
            assert_eq!(
                references(&text),
                Err(TemplateError::BadExpression(expr.trim().to_string())),
                "{text:?}"
            );
        }
        let msg = TemplateError::BadExpression("env.HOME".into()).to_string();
        assert!(
            msg.contains("\"env.HOME\"") && msg.contains("inputs.<name>"),
            "{msg}"
        );
    }

    #[test]
    fn renders_inputs_strings_as_is_and_other_values_compactly() {
        let f = Fixture::new();
        assert_eq!(
            f.render("Fix: ${{ inputs.issue }}!"),
            "Fix: Add retries to the uploader!"
        );
        assert_eq!(f.render("n=${{inputs.count}}"), "n=3");
        assert_eq!(f.render("${{ inputs.flags }}"), r#"{"fast":true}"#);
    }

    #[test]
    fn renders_step_outputs_fields_and_array_items() {
        let f = Fixture::new();
        assert_eq!(
            f.render("${{ steps.architect.output.design }}"),
            "use a token bucket"
        );
        assert_eq!(f.render("${{ steps.architect.output.files.1 }}"), "b.rs");
        assert_eq!(
            f.render("${{ steps.architect.output.files }}"),
            r#"["a.rs","b.rs"]"#
        );
        assert_eq!(f.render("${{ steps.architect.output.meta.score }}"), "0.9");
        assert_eq!(
            f.render("${{ steps.architect.output.meta.tags.area }}"),
            "net"
        );
        // A failed step's output is still readable: `when: failure` fix steps need it.
        assert_eq!(
            f.render("Failures: ${{ steps.unit-tests_2.output }}"),
            "Failures: 3 tests failed"
        );
    }

    #[test]
    fn renders_statuses_and_run_fields() {
        let f = Fixture::new();
        assert_eq!(
            f.render("${{ steps.unit-tests_2.status }}/${{ steps.review.status }}"),
            "failed/skipped"
        );
        assert_eq!(
            f.render("${{ run.id }} of ${{ run.workflow }}"),
            "run-123 of ship-it"
        );
    }

    #[test]
    fn absent_values_render_empty() {
        let f = Fixture::new();
        for text in [
            "${{ inputs.missing }}",
            "${{ inputs.nothing }}",
            "${{ steps.review.output }}",
            "${{ steps.review.output.x }}",
            "${{ steps.ghost.output }}",
            "${{ steps.ghost.status }}",
            "${{ steps.architect.output.nope }}",
            "${{ steps.architect.output.files.7 }}",
            "${{ steps.architect.output.files.x }}",
            "${{ steps.architect.output.design.deeper }}",
            "${{ steps.unit-tests_2.output.field }}",
        ] {
            assert_eq!(f.render(&format!("[{text}]")), "[]", "{text}");
        }
    }

    #[test]
    fn render_keeps_text_and_handles_adjacent_expressions() {
        let f = Fixture::new();
        assert_eq!(
            f.render("plain text {{ not a template }}"),
            "plain text {{ not a template }}"
        );
        assert_eq!(f.render("${{inputs.count}}${{inputs.count}}"), "33");
        assert_eq!(f.render("ünïcode ${{ inputs.count }} ✓"), "ünïcode 3 ✓");
        assert_eq!(
            f.render("$ {{ x }} and $${{ inputs.count }}"),
            "$ {{ x }} and $3"
        );
        assert_eq!(
            render("x ${{ inputs.count", &f.ctx()),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(
            render("${{ secrets.token }}", &f.ctx()),
            Err(TemplateError::BadExpression("secrets.token".into()))
        );
    }

    #[test]
    fn render_value_renders_every_string_leaf_but_not_keys() {
        let f = Fixture::new();
        let body = json!({
            "title": "${{ inputs.issue }}",
            "${{ inputs.issue }}": "key stays",
            "nested": {"list": ["${{ inputs.count }}", 7, null, true, {"s": "${{ run.id }}"}]},
        });
        let rendered = render_value(&body, &f.ctx()).expect("renders");
        assert_eq!(
            rendered,
            json!({
                "title": "Add retries to the uploader",
                "${{ inputs.issue }}": "key stays",
                "nested": {"list": ["3", 7, null, true, {"s": "run-123"}]},
            })
        );
        assert_eq!(
            render_value(&json!(["ok", {"a": "${{ bad }}"}]), &f.ctx()),
            Err(TemplateError::BadExpression("bad".into()))
        );
    }

    fn finished_run(f: &Fixture) -> Run {
        let Value::Object(outputs) = json!({
            "repo": "acme/app",
            "count": 2,
            "report": {"files": ["a.rs", "b.rs"]},
            "nothing": null,
        }) else {
            panic!("outputs fixture must be an object");
        };
        let def = match crate::definition::parse_definition(
            "id: ship-it\nsteps:\n  - id: nap\n    kind: wait\n    duration: 1s\n",
        ) {
            Ok(d) => d,
            Err(e) => panic!("fixture definition is invalid: {e}"),
        };
        let mut run = Run::new("run-123", &def, 1, f.inputs.clone(), 0);
        run.steps = f.steps.clone();
        run.outputs = outputs;
        run.status = crate::model::RunStatus::Failed;
        run.error = Some("step nap failed".into());
        run
    }

    fn completion(run: &Run, text: &str) -> Value {
        match render_completion(text, run) {
            Ok(v) => v,
            Err(e) => panic!("render_completion {text:?} failed: {e}"),
        }
    }

    #[test]
    fn completion_templates_read_how_the_run_ended() {
        let f = Fixture::new();
        let run = finished_run(&f);
        // One expression: the value itself, typed.
        assert_eq!(
            completion(&run, "${{ run.outputs.repo }}"),
            json!("acme/app")
        );
        assert_eq!(completion(&run, "${{run.outputs.count}}"), json!(2));
        assert_eq!(
            completion(&run, "${{ run.outputs.report.files.1 }}"),
            json!("b.rs")
        );
        assert_eq!(
            completion(&run, "${{ run.outputs.report }}"),
            json!({"files": ["a.rs", "b.rs"]})
        );
        assert_eq!(completion(&run, "${{ run.outputs }}")["repo"], "acme/app");
        assert_eq!(completion(&run, "${{ run.status }}"), json!("failed"));
        assert_eq!(
            completion(&run, "${{ run.error }}"),
            json!("step nap failed")
        );
        assert_eq!(completion(&run, "${{ run.id }}"), json!("run-123"));
        assert_eq!(completion(&run, "${{ run.workflow }}"), json!("ship-it"));
        assert_eq!(completion(&run, "${{ inputs.count }}"), json!(3));
        assert_eq!(
            completion(&run, "${{ steps.architect.output.design }}"),
            json!("use a token bucket")
        );
        assert_eq!(
            completion(&run, "${{ steps.unit-tests_2.status }}"),
            json!("failed")
        );
        // Absent: null, so the started run's default (or a "missing" refusal) applies.
        for text in [
            "${{ run.outputs.missing }}",
            "${{ run.outputs.nothing }}",
            "${{ run.outputs.repo.deeper }}",
            "${{ inputs.missing }}",
            "${{ steps.review.output }}",
            "${{ steps.ghost.status }}",
        ] {
            assert_eq!(completion(&run, text), Value::Null, "{text}");
        }
        // Anything else: a string, absent parts empty.
        assert_eq!(
            completion(
                &run,
                "${{ run.workflow }} ${{ run.status }} on ${{ run.outputs.repo }} (${{ run.outputs.count }})${{ run.outputs.missing }}"
            ),
            json!("ship-it failed on acme/app (2)")
        );
        assert_eq!(completion(&run, "plain"), json!("plain"));
        assert_eq!(completion(&run, ""), json!(""));
        let mut ok = run.clone();
        ok.error = None;
        assert_eq!(completion(&ok, "[${{ run.error }}]"), json!("[]"));
    }

    #[test]
    fn completion_templates_refuse_what_they_cannot_read() {
        let f = Fixture::new();
        let run = finished_run(&f);
        for expr in [
            "run.output.repo",
            "run.outputs.",
            "run.outputs..x",
            "run.status.x",
            "run.started_by",
            "outputs.repo",
            "secrets.token",
        ] {
            let text = format!("${{{{ {expr} }}}}");
            let want = Err(TemplateError::BadCompletionExpression(expr.to_string()));
            assert_eq!(render_completion(&text, &run), want, "{text:?}");
            assert_eq!(check_completion(&text), want.map(drop), "{text:?}");
        }
        assert_eq!(
            check_completion("x ${{ run.outputs.repo"),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(
            check_completion("${{ run.outputs.a.b }} and ${{ run.status }}"),
            Ok(())
        );
        let msg = TemplateError::BadCompletionExpression("run.output".into()).to_string();
        assert!(
            msg.contains("run.outputs[.name") && msg.contains("run.status"),
            "{msg}"
        );
        // Step templates still may not read a run's ending: there is none yet.
        for text in [
            "${{ run.status }}",
            "${{ run.outputs.repo }}",
            "${{ run.error }}",
        ] {
            assert!(
                matches!(references(text), Err(TemplateError::BadExpression(_))),
                "{text}"
            );
            assert!(
                matches!(render(text, &f.ctx()), Err(TemplateError::BadExpression(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn is_templated_detects_expressions() {
        assert!(is_templated("a ${{ inputs.x }}"));
        assert!(!is_templated("a {{ inputs.x }}"));
    }
}
