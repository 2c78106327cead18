//! Workflow definitions: the examples, every validation check, format equivalence, and inputs.

use std::collections::BTreeSet;
use std::path::PathBuf;

use flowgate_shared::definition::{
    OnExpiry, Problem, StepAction, StepKind, TriggerDef, When, WhenFull, WorkflowDefinition,
    parse_definition, parse_definition_value, resolve_inputs, upstream_steps, validate,
};
use serde_json::{Map, Value, json};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn read_example(name: &str) -> String {
    let path = examples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse_ok(name: &str, text: &str) -> WorkflowDefinition {
    match parse_definition(text) {
        Ok(def) => def,
        Err(e) => panic!("{name} does not validate:\n{e}"),
    }
}

/// The raw document, parsed the way serde alone would (no validation).
fn raw(text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("not YAML/JSON: {e}"))
}

fn step_ids(def: &WorkflowDefinition) -> Vec<&str> {
    def.steps.iter().map(|s| s.id.as_str()).collect()
}

fn kinds(def: &WorkflowDefinition) -> Vec<StepKind> {
    def.steps.iter().map(|s| s.kind()).collect()
}

fn agent(def: &WorkflowDefinition, id: &str) -> flowgate_shared::definition::AgentAction {
    match def.step(id).map(|s| &s.action) {
        Some(StepAction::Agent(a)) => a.clone(),
        other => panic!("{id} is not an agent step: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

#[test]
fn every_example_parses_and_validates_with_no_problems() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists next to shared/")
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 4,
        "expected at least 4 examples, found {names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".json")),
        "one example is JSON"
    );

    for name in &names {
        let text = read_example(name);
        let def = parse_ok(name, &text);
        assert_eq!(validate(&def), Vec::<Problem>::new(), "{name}");
        // The definition assembled piece by piece equals what serde builds from the whole document.
        let whole: WorkflowDefinition =
            serde_json::from_value(raw(&text)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(def, whole, "{name}");
        // Typed → JSON text → parsed again is the same definition.
        let json = serde_json::to_string_pretty(&def).expect("serializes");
        assert_eq!(parse_ok(name, &json), def, "{name} round trip through JSON");
        let yaml = serde_norway::to_string(&def).expect("serializes");
        assert_eq!(parse_ok(name, &yaml), def, "{name} round trip through YAML");
    }
}

#[test]
fn architect_implement_review_example_has_its_steps() {
    let def = parse_ok(
        "architect",
        &read_example("architect-implement-review.yaml"),
    );
    assert_eq!(def.id, "architect-implement-review");
    assert_eq!(
        step_ids(&def),
        ["architect", "approve-design", "implement", "test", "review"]
    );
    assert_eq!(
        kinds(&def),
        [
            StepKind::Agent,
            StepKind::Approval,
            StepKind::Agent,
            StepKind::Agent,
            StepKind::Agent
        ]
    );
    let (architect, implement) = (agent(&def, "architect"), agent(&def, "implement"));
    assert_eq!(architect.workflow, "architect");
    assert_eq!(implement.workflow, "implement");
    assert_eq!(agent(&def, "test").workflow, "test");
    assert_eq!(agent(&def, "review").workflow, "review");
    assert!(architect.session.is_some());
    assert_eq!(
        implement.session, architect.session,
        "implement continues the architect's conversation"
    );
    assert!(implement.message.contains("${{ steps.architect.output }}"));
    let Some(StepAction::Approval(approval)) = def.step("approve-design").map(|s| &s.action) else {
        panic!("approve-design is an approval");
    };
    assert!(approval.message.contains("${{ steps.architect.output }}"));
    assert_eq!(approval.on_expiry, OnExpiry::Escalate);
    for id in ["architect", "implement", "test", "review"] {
        let retry = def.step(id).and_then(|s| s.retry.as_ref());
        assert!(retry.is_some_and(|r| r.max_attempts >= 2), "{id} retries");
    }
    assert!(def.timeout.is_some());
    assert!(def.inputs["issue"].required);
    assert_eq!(
        def.outputs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["design", "implementation", "review", "test_report"]
    );
    assert_eq!(
        upstream_steps(&def, "review"),
        BTreeSet::from(["architect", "approve-design", "implement", "test"])
    );
}

#[test]
fn nightly_tests_example_has_its_steps() {
    let def = parse_ok("nightly", &read_example("nightly-tests.yaml"));
    assert_eq!(step_ids(&def), ["test", "report"]);
    assert_eq!(kinds(&def), [StepKind::Agent, StepKind::Notify]);
    assert_eq!(def.step("report").map(|s| s.when), Some(When::Always));
    match def.triggers.as_slice() {
        [
            TriggerDef::Schedule {
                expression,
                timezone,
                ..
            },
        ] => {
            assert_eq!(expression, "cron(0 2 * * ? *)");
            assert!(timezone.is_some());
        }
        other => panic!("expected one schedule trigger, got {other:?}"),
    }
}

#[test]
fn fix_on_failure_example_has_its_steps() {
    let def = parse_ok("fix", &read_example("fix-on-failure.yaml"));
    assert_eq!(step_ids(&def), ["test", "fix", "retest", "report"]);
    let step = |id: &str| def.step(id).unwrap_or_else(|| panic!("{id} exists"));
    assert!(step("test").continue_on_failure);
    assert_eq!(step("fix").when, When::Failure);
    assert!(
        agent(&def, "fix")
            .message
            .contains("${{ steps.test.output }}")
    );
    assert_eq!(agent(&def, "fix").workflow, "fix");
    assert_eq!(step("retest").depends_on, ["fix"]);
    assert_eq!(step("report").when, When::Always);
    assert_eq!(step("report").kind(), StepKind::Notify);
}

#[test]
fn release_notes_json_example_has_its_steps() {
    let text = read_example("release-notes.json");
    assert!(text.trim_start().starts_with('{'));
    let def = parse_ok("release-notes", &text);
    assert_eq!(
        step_ids(&def),
        [
            "draft-notes",
            "approve-notes",
            "publish",
            "soak",
            "announce"
        ]
    );
    assert_eq!(
        kinds(&def),
        [
            StepKind::Agent,
            StepKind::Approval,
            StepKind::Http,
            StepKind::Wait,
            StepKind::Notify
        ]
    );
    let publish = def.step("publish").expect("publish exists");
    match &publish.compensate {
        Some(StepAction::Http(h)) => assert!(h.url.contains("${{ steps.publish.output.id }}")),
        other => panic!("publish is compensated by an http call, got {other:?}"),
    }
    assert!(matches!(
        def.triggers.as_slice(),
        [TriggerDef::Webhook { .. }]
    ));
}

// ---------------------------------------------------------------------------------------------
// Invalid definitions: every check, with exact paths
// ---------------------------------------------------------------------------------------------

/// A table row: name, document, and the expected (path, message substring) problems in order.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Parse `text` and compare its problems with `expected` (path, message substring), in order.
fn assert_problems(name: &str, text: &str, expected: &[(&str, &str)]) {
    let problems = match parse_definition(text) {
        Ok(def) => panic!("{name}: expected problems, but it validated: {def:?}"),
        Err(e) => e.0,
    };
    let listing = problems
        .iter()
        .map(|p| format!("  {:?}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        problems.len(),
        expected.len(),
        "{name}: expected {} problems, got:\n{listing}",
        expected.len()
    );
    for (p, (path, needle)) in problems.iter().zip(expected) {
        assert_eq!(
            p.path, *path,
            "{name}: wrong path, all problems:\n{listing}"
        );
        assert!(
            p.message.contains(needle),
            "{name}: message at {path:?} lacks {needle:?}, all problems:\n{listing}"
        );
    }
}

/// One step that is fine on its own, to pad documents.
const OK_STEP: &str = "  - {id: ok, kind: notify, slack_channel: '#c', message: hi}\n";

#[test]
fn syntax_and_document_shape_problems() {
    let cases: &[Case] = &[
        (
            "yaml syntax",
            "id: w\nsteps:\n  - id: a\n   kind: agent\n",
            &[("", "invalid YAML")],
        ),
        (
            "json syntax carries line and column",
            "{\n  \"id\": \"w\",\n  \"steps\": [,]\n}",
            &[("", "invalid JSON: expected value at line 3 column 13")],
        ),
        (
            "duplicate key",
            "id: w\nsteps: []\nsteps: []\n",
            &[("", "duplicate key \"steps\"")],
        ),
        ("empty document", "", &[("", "the definition is empty")]),
        (
            "root is a list",
            "- id: w\n",
            &[(
                "",
                "must be a mapping with at least id and steps, found a list",
            )],
        ),
        (
            "missing id and steps",
            "name: nothing\n",
            &[
                ("id", "required field \"id\" is missing"),
                ("steps", "required field \"steps\" is missing"),
            ],
        ),
        (
            "unknown top-level fields",
            "id: w\nstpes: []\ndepends_on: [x]\nsteps:\n  - {id: ok, kind: notify, slack_channel: '#c', message: hi}\n",
            &[
                ("depends_on", "step fields go inside an item of steps"),
                ("stpes", "unknown field \"stpes\"; did you mean \"steps\"?"),
            ],
        ),
        (
            "steps is not a list",
            "id: w\nsteps: {a: 1}\n",
            &[("steps", "expected a list of steps, found a mapping")],
        ),
        (
            "step is not a mapping",
            "id: w\nsteps:\n  - just-a-string\n",
            &[("steps[0]", "found a string")],
        ),
        (
            "yaml tags are refused",
            "id: !Ref w\nsteps: []\n",
            &[("", "YAML tags such as !Ref are not supported")],
        ),
        (
            "merge keys are explained",
            "id: w\nsteps:\n  - id: a\n    kind: notify\n    slack_channel: '#c'\n    message: hi\n    <<: {when: always}\n",
            &[("steps[0].<<", "YAML merge keys (<<) are not supported")],
        ),
    ];
    for (name, text, expected) in cases {
        assert_problems(name, text, expected);
    }
}

#[test]
fn step_structure_problems() {
    let cases: &[Case] = &[
        (
            "kind missing and unknown",
            "id: w\nsteps:\n  - {id: a, message: hi}\n  - {id: b, kind: agnet, workflow: test, message: hi}\n",
            &[
                (
                    "steps[0].kind",
                    "required field \"kind\" is missing; set it to one of agent, approval, notify, http, wait",
                ),
                (
                    "steps[1].kind",
                    "unknown step kind \"agnet\"; did you mean \"agent\"?",
                ),
            ],
        ),
        (
            "unknown and misplaced step fields",
            "id: w\nsteps:\n  - {id: a, kind: agent, workflow: test, message: hi, depend_on: [b], duration: 5m, colour: red}\n",
            &[
                (
                    "steps[0].colour",
                    "unknown field \"colour\"; agent steps take: id, name, kind, depends_on",
                ),
                ("steps[0].depend_on", "did you mean \"depends_on\"?"),
                (
                    "steps[0].duration",
                    "does not apply to agent steps (it belongs to wait steps)",
                ),
            ],
        ),
        (
            "missing action fields",
            "id: w\nsteps:\n  - {id: a, kind: agent, max_turns: lots}\n  - {kind: wait}\n",
            &[
                (
                    "steps[0].workflow",
                    "required field \"workflow\" is missing; agent actions need workflow, message",
                ),
                ("steps[0].message", "required field \"message\" is missing"),
                // Optional fields are still checked when required ones are missing.
                ("steps[0].max_turns", "expected a whole number"),
                ("steps[1].id", "required field \"id\" is missing"),
                (
                    "steps[1].duration",
                    "required field \"duration\" is missing; wait actions need duration",
                ),
            ],
        ),
        (
            "type errors in several steps are all reported",
            "id: w\nsteps:\n  - {id: a, kind: agent, workflow: test, message: hi, max_turns: many, session: [x]}\n  - {id: b, kind: wait, duration: 5m, timeout: 10 parsecs, when: sometimes, continue_on_failure: maybe}\n",
            &[
                (
                    "steps[0].max_turns",
                    "expected a whole number of 0 or more, found string \"many\"",
                ),
                ("steps[0].session", "expected a string, found a list"),
                (
                    "steps[1].when",
                    "\"sometimes\" is not one of success, failure, always",
                ),
                ("steps[1].timeout", "invalid duration \"10 parsecs\""),
                ("steps[1].continue_on_failure", "expected a boolean"),
            ],
        ),
        (
            "unknown fields in retry and compensate",
            "id: w\nsteps:\n  - id: a\n    kind: http\n    url: https://example.com\n    retry: {max_attempts: 3, jitter: true}\n    compensate: {kind: http, url: https://example.com/undo, timeout: 5s, methd: DELETE}\n",
            &[
                (
                    "steps[0].retry.jitter",
                    "unknown field \"jitter\"; retry take: max_attempts, backoff, initial_delay, max_delay",
                ),
                ("steps[0].compensate.methd", "did you mean \"method\"?"),
                (
                    "steps[0].compensate.timeout",
                    "a compensate block holds only kind and the action's own fields",
                ),
            ],
        ),
        (
            "compensate kind and type problems",
            "id: w\nsteps:\n  - {id: a, kind: http, url: 'https://example.com', compensate: {url: x}}\n  - {id: b, kind: http, url: 'https://example.com', compensate: {kind: http, url: 'https://x', method: YEET}}\n",
            &[
                (
                    "steps[0].compensate.kind",
                    "required field \"kind\" is missing",
                ),
                (
                    "steps[1].compensate.method",
                    "\"YEET\" is not one of GET, POST, PUT, PATCH, DELETE",
                ),
            ],
        ),
        (
            "bad retry values",
            "id: w\nsteps:\n  - {id: a, kind: wait, duration: 1m, retry: {max_attempts: -1, initial_delay: soon}}\n",
            &[
                ("steps[0].retry.initial_delay", "invalid duration \"soon\""),
                (
                    "steps[0].retry.max_attempts",
                    "expected a whole number of 0 or more, found integer -1",
                ),
            ],
        ),
    ];
    for (name, text, expected) in cases {
        assert_problems(name, text, expected);
    }
}

#[test]
fn inputs_triggers_and_notifications_structure_problems() {
    let text = format!(
        "id: w\ninputs:\n  a: {{type: str, requird: true}}\n  b: string\n  c: {{required: true}}\ntriggers:\n  - {{type: schedule, expression: 'rate(1 day)', id: x}}\n  - {{type: cron}}\n  - {{expression: 'rate(1 day)'}}\n  - {{type: webhook}}\n  - {{type: workflow_completed, workflow: w, statuses: failed}}\nnotifications:\n  - {{events: [run.failed], slack_channel: '#c', channel: '#d'}}\n  - {{events: run.failed, slack_channel: '#c'}}\nsteps:\n{OK_STEP}"
    );
    assert_problems(
        "inputs, triggers, notifications",
        &text,
        &[
            ("inputs.a.requird", "did you mean \"required\"?"),
            (
                "inputs.a.type",
                "\"str\" is not one of string, number, integer, boolean, object, array; did you mean \"string\"?",
            ),
            ("inputs.b", "expected a mapping with at least `type`"),
            ("inputs.c.type", "required field \"type\" is missing"),
            (
                "triggers[0].id",
                "does not apply to schedule triggers (it belongs to webhook triggers)",
            ),
            (
                "triggers[1].type",
                "unknown trigger type \"cron\"; use one of schedule, webhook, workflow_completed",
            ),
            ("triggers[2].type", "required field \"type\" is missing"),
            ("triggers[3].id", "required field \"id\" is missing"),
            ("triggers[4].statuses", "expected a list"),
            ("notifications[0].channel", "unknown field \"channel\""),
            ("notifications[1].events", "expected a list"),
        ],
    );
}

#[test]
fn id_and_size_problems() {
    let cases: &[Case] = &[
        (
            "bad workflow and step ids, duplicates",
            "id: My Workflow\nsteps:\n  - {id: Build, kind: wait, duration: 1m}\n  - {id: b, kind: wait, duration: 1m}\n  - {id: b, kind: wait, duration: 1m}\n",
            &[
                (
                    "id",
                    "workflow id \"My Workflow\" is not valid: use 1 to 64 lowercase letters",
                ),
                ("steps[0].id", "step id \"Build\" is not valid"),
                (
                    "steps[2].id",
                    "duplicate step id \"b\": steps[1] already uses it",
                ),
            ],
        ),
        (
            "no steps",
            "id: w\nsteps: []\n",
            &[("steps", "a workflow needs at least one step")],
        ),
    ];
    for (name, text, expected) in cases {
        assert_problems(name, text, expected);
    }
}

#[test]
fn more_than_100_steps_is_one_problem() {
    let mut text = String::from("id: big\nsteps:\n");
    for i in 0..101 {
        text.push_str(&format!("  - {{id: s{i}, kind: wait, duration: 1s}}\n"));
    }
    assert_problems(
        "101 steps",
        &text,
        &[("steps", "101 steps is more than the 100 allowed")],
    );
    // Exactly 100 is fine.
    let hundred: String = text.lines().take(102).map(|l| format!("{l}\n")).collect();
    assert_eq!(parse_definition(&hundred).map(|d| d.steps.len()), Ok(100));
}

#[test]
fn dependency_problems() {
    let cases: &[Case] = &[
        (
            "unknown, self and duplicate dependencies",
            "id: w\nsteps:\n  - {id: test, kind: wait, duration: 1m}\n  - {id: build, kind: wait, duration: 1m}\n  - {id: deploy, kind: wait, duration: 1m, depends_on: [tset, deploy, test, test, nope]}\n",
            &[
                (
                    "steps[2].depends_on[0]",
                    "unknown step \"tset\"; did you mean \"test\"?",
                ),
                (
                    "steps[2].depends_on[1]",
                    "step \"deploy\" depends on itself",
                ),
                (
                    "steps[2].depends_on[3]",
                    "\"test\" is listed twice in depends_on (first at depends_on[2])",
                ),
                (
                    "steps[2].depends_on[4]",
                    "unknown step \"nope\"; steps are: test, build, deploy",
                ),
            ],
        ),
        (
            "a three-step cycle is named",
            "id: w\nsteps:\n  - {id: start, kind: wait, duration: 1m}\n  - {id: a, kind: wait, duration: 1m, depends_on: [start, b]}\n  - {id: b, kind: wait, duration: 1m, depends_on: [c]}\n  - {id: c, kind: wait, duration: 1m, depends_on: [a]}\n",
            &[("steps[1].depends_on", "dependency cycle: a → b → c → a")],
        ),
        (
            "two separate cycles are each named once",
            "id: w\nsteps:\n  - {id: a, kind: wait, duration: 1m, depends_on: [b]}\n  - {id: b, kind: wait, duration: 1m, depends_on: [a]}\n  - {id: c, kind: wait, duration: 1m, depends_on: [d]}\n  - {id: d, kind: wait, duration: 1m, depends_on: [c, b]}\n",
            &[
                ("steps[0].depends_on", "dependency cycle: a → b → a"),
                ("steps[2].depends_on", "dependency cycle: c → d → c"),
            ],
        ),
        (
            "overlapping cycles in one group",
            "id: w\nsteps:\n  - {id: a, kind: wait, duration: 1m, depends_on: [b, c]}\n  - {id: b, kind: wait, duration: 1m, depends_on: [c]}\n  - {id: c, kind: wait, duration: 1m, depends_on: [a]}\n",
            &[
                ("steps[0].depends_on", "dependency cycle: a → b → c → a"),
                ("steps[0].depends_on", "dependency cycle: a → c → a"),
            ],
        ),
        (
            "when: failure needs dependencies",
            "id: w\nsteps:\n  - {id: a, kind: wait, duration: 1m, when: failure}\n",
            &[("steps[0].when", "this step has no depends_on")],
        ),
    ];
    for (name, text, expected) in cases {
        assert_problems(name, text, expected);
    }
}

#[test]
fn range_problems() {
    let text = "id: w\ntimeout: 0s\nsteps:\n\
  - {id: a, kind: agent, workflow: test, message: hi, max_turns: 0, timeout: 0}\n\
  - {id: b, kind: agent, workflow: test, message: hi, max_turns: 201, retry: {max_attempts: 21}}\n\
  - {id: c, kind: approval, message: ok?, required: 0}\n\
  - {id: d, kind: approval, message: ok?, approvers: [U1, U2], required: 3, expires_in: 0s}\n\
  - {id: e, kind: approval, message: ok?, expires_in: 1h, on_expiry: escalate}\n\
  - {id: f, kind: approval, message: ok?, on_expiry: approve}\n\
  - {id: g, kind: wait, duration: 0s, retry: {max_attempts: 0, initial_delay: 10m}}\n\
  - {id: h, kind: http, url: 'https://example.com', expect_status: [200, 99, 600]}\n\
  - {id: i, kind: agent, workflow: 'my workflow', message: '  '}\n";
    assert_problems(
        "ranges",
        text,
        &[
            ("steps[0].timeout", "timeout must be longer than 0"),
            (
                "steps[0].max_turns",
                "max_turns must be between 1 and 200, got 0",
            ),
            (
                "steps[1].retry.max_attempts",
                "max_attempts must be between 1 and 20",
            ),
            ("steps[1].max_turns", "got 201"),
            ("steps[2].required", "required must be at least 1"),
            (
                "steps[3].required",
                "required is 3 but only 2 approver(s) are listed",
            ),
            ("steps[3].expires_in", "expires_in must be longer than 0"),
            ("steps[4].escalate_to", "needs someone to escalate to"),
            ("steps[5].on_expiry", "set expires_in"),
            ("steps[6].retry.max_attempts", "between 1 and 20"),
            (
                "steps[6].retry.initial_delay",
                "initial_delay (10m) is longer than max_delay (5m",
            ),
            ("steps[6].duration", "a wait duration must be longer than 0"),
            ("steps[7].expect_status[1]", "99 is not an HTTP status code"),
            (
                "steps[7].expect_status[2]",
                "600 is not an HTTP status code",
            ),
            (
                "steps[8].workflow",
                "agent workflow \"my workflow\" is not valid",
            ),
            ("steps[8].message", "message is empty"),
            // Problems are ordered by the schema's top-level field order: `timeout` after `steps`.
            ("timeout", "the run timeout must be longer than 0"),
        ],
    );
}

#[test]
fn template_problems() {
    let text = r#"
id: w
inputs:
  issue: {type: string}
steps:
  - {id: design, kind: agent, workflow: architect, message: 'Design ${{ inputs.isue }}'}
  - {id: build, kind: agent, workflow: implement, depends_on: [design], message: 'Build ${{ steps.design.output }} ${{ steps.tests.output }}'}
  - {id: tests, kind: agent, workflow: test, depends_on: [build], message: 'Test ${{ steps.design.output }} ${{ steps.tests.status }} ${{ inputs.issue'}
  - id: publish
    kind: http
    depends_on: [tests]
    url: 'https://example.com/${{ secrets.token }}'
    headers: {X-Run: '${{ steps.report.status }}'}
    body: {items: [{title: '${{ steps.design.output.title }}'}, '${{ inputs.nope }}']}
    compensate: {kind: notify, slack_channel: '#c', message: 'undo ${{ steps.publish.output.id }} ${{ steps.report.output }}'}
  - {id: report, kind: notify, slack_channel: '#c', depends_on: [publish], message: '${{ run.id }} ${{ run.workflow }} ${{ steps.design.status }}'}
outputs:
  all: '${{ steps.report.output }} ${{ steps.design.output }}'
  bad: '${{ steps.ghost.output }} ${{ inputs.missing }}'
"#;
    assert_problems(
        "templates",
        text,
        &[
            (
                "steps[0].message",
                "template uses input \"isue\", which is not declared (declared inputs: issue); did you mean \"issue\"?",
            ),
            (
                "steps[1].message",
                "template uses step \"tests\", which is not upstream of \"build\"; add \"tests\" to depends_on of \"build\"",
            ),
            (
                "steps[2].message",
                "unclosed template expression starting at byte",
            ),
            (
                "steps[3].url",
                "template expression \"secrets.token\" is not one of",
            ),
            (
                "steps[3].headers.X-Run",
                "template uses step \"report\", which is not upstream of \"publish\"",
            ),
            (
                "steps[3].body.items[1]",
                "template uses input \"nope\", which is not declared",
            ),
            (
                "steps[3].compensate.message",
                "template uses step \"report\", which is not upstream of \"publish\"",
            ),
            (
                "outputs.bad",
                "template uses step \"ghost\", which does not exist",
            ),
            (
                "outputs.bad",
                "template uses input \"missing\", which is not declared",
            ),
        ],
    );
    // A step reading its own output is refused in its parameters, allowed in its compensation.
    assert_problems(
        "self reference",
        "id: w\nsteps:\n  - {id: a, kind: http, url: 'https://x/${{ steps.a.output }}', compensate: {kind: http, method: DELETE, url: 'https://x/${{ steps.a.output.id }}'}}\n",
        &[("steps[0].url", "a step cannot use its own output or status")],
    );
    // Without declared inputs the message says so.
    assert_problems(
        "no inputs declared",
        "id: w\nsteps:\n  - {id: a, kind: notify, slack_channel: '#c', message: '${{ inputs.x }}'}\n",
        &[(
            "steps[0].message",
            "the workflow declares no inputs; declare it under inputs",
        )],
    );
}

#[test]
fn action_target_and_compensation_problems() {
    let text = "id: w\nsteps:\n\
  - {id: a, kind: notify, message: hi}\n\
  - {id: b, kind: notify, message: hi, webhook_url: 'ftp://example.com'}\n\
  - {id: c, kind: http, url: 'example.com/x', compensate: {kind: approval, message: undo?}}\n\
  - {id: d, kind: http, url: '${{ steps.c.output.next }}', depends_on: [c], compensate: {kind: wait, duration: 1m}}\n\
  - {id: e, kind: http, url: ' ', compensate: {kind: notify, message: undone}}\n";
    assert_problems(
        "targets and compensation",
        text,
        &[
            ("steps[0]", "a notify action needs somewhere to send to"),
            (
                "steps[1].webhook_url",
                "\"ftp://example.com\" is not an http:// or https:// URL",
            ),
            (
                "steps[2].url",
                "\"example.com/x\" is not an http:// or https:// URL",
            ),
            (
                "steps[2].compensate.kind",
                "a compensate action must be agent, http or notify, not approval",
            ),
            ("steps[3].compensate.kind", "not wait"),
            ("steps[4].url", "url is empty"),
            (
                "steps[4].compensate",
                "a notify action needs somewhere to send to",
            ),
        ],
    );
}

#[test]
fn session_problems() {
    let text = "id: w\nsteps:\n\
  - {id: design, kind: agent, workflow: architect, message: m, session: feature}\n\
  - {id: spike, kind: agent, workflow: architect, message: m, session: feature}\n\
  - {id: build, kind: agent, workflow: implement, message: m, session: feature, depends_on: [design, spike]}\n\
  - {id: other, kind: agent, workflow: test, message: m, session: ''}\n";
    assert_problems(
        "sessions",
        text,
        &[
            (
                "steps[1].session",
                "session \"feature\" is also used by step \"design\", which can run at the same time as \"spike\"",
            ),
            ("steps[3].session", "session is empty"),
        ],
    );
}

#[test]
fn input_declaration_problems() {
    let text = format!(
        "id: w\ninputs:\n  2fast: {{type: string}}\n  count: {{type: integer, default: 2.5}}\n  name: {{type: string, required: true, default: x}}\n  tags: {{type: array, default: [a]}}\nsteps:\n{OK_STEP}"
    );
    assert_problems(
        "inputs",
        &text,
        &[
            ("inputs.2fast", "input name \"2fast\" is not valid"),
            (
                "inputs.count.default",
                "default must be of the declared type integer, found a number",
            ),
            (
                "inputs.name.required",
                "remove `required: true` or the default",
            ),
        ],
    );
}

#[test]
fn trigger_problems() {
    let text = format!(
        "id: w\ninputs:\n  repo: {{type: string, required: true}}\n  n: {{type: integer, default: 1}}\n\
triggers:\n\
  - {{type: schedule, expression: 'cron(0 2 * * * *)', inputs: {{repo: r, n: many, extra: 1}}}}\n\
  - {{type: schedule, expression: 'rate(1 hours)', timezone: 'Mars Base', inputs: {{repo: r}}}}\n\
  - {{type: schedule, expression: '0 2 * * *'}}\n\
  - {{type: webhook, id: Hook, inputs: {{repo: repository.name}}, filter: {{action: opened}}}}\n\
  - {{type: webhook, id: gh, inputs: {{repo: /repository/name, ghost: /x}}}}\n\
  - {{type: webhook, id: gh, inputs: {{repo: /repo}}}}\n\
  - {{type: workflow_completed, workflow: Nightly Tests, statuses: [succeeded, running, done], inputs: {{repo: '${{{{ run.outputs.repo }}}}'}}}}\n\
steps:\n{OK_STEP}"
    );
    assert_problems(
        "triggers",
        &text,
        &[
            (
                "triggers[0].expression",
                "exactly one of them must be \"?\"",
            ),
            (
                "triggers[0].inputs.extra",
                "\"extra\" is not a declared input",
            ),
            (
                "triggers[0].inputs.n",
                "input \"n\" is declared as integer, found a string",
            ),
            ("triggers[1].expression", "write \"rate(1 hour)\""),
            ("triggers[1].timezone", "is not an IANA time zone name"),
            ("triggers[2].expression", "is not cron(...) or rate(...)"),
            (
                "triggers[2].inputs",
                "required input \"repo\" gets no value, so scheduled runs would be refused",
            ),
            ("triggers[3].id", "webhook id \"Hook\" is not valid"),
            (
                "triggers[3].filter.action",
                "filter key \"action\" is not a JSON pointer",
            ),
            (
                "triggers[3].inputs.repo",
                "\"repository.name\" is not a JSON pointer",
            ),
            (
                "triggers[4].inputs.ghost",
                "\"ghost\" is not a declared input",
            ),
            (
                "triggers[5].id",
                "webhook id \"gh\" is already used by triggers[4]",
            ),
            (
                "triggers[6].workflow",
                "workflow id \"Nightly Tests\" is not valid",
            ),
            (
                "triggers[6].statuses[1]",
                "\"running\" is not a status a finished run can have; use succeeded, failed, cancelled, timed_out",
            ),
            (
                "triggers[6].statuses[2]",
                "\"done\" is not a status a finished run can have",
            ),
        ],
    );
}

#[test]
fn notification_problems() {
    let text = format!(
        "id: w\nnotifications:\n  - {{events: [run.failed, run.finished, step.faild]}}\n  - {{events: [], slack_channel: '#c', webhook_url: 'hooks.example.com'}}\nsteps:\n{OK_STEP}"
    );
    assert_problems(
        "notifications",
        &text,
        &[
            (
                "notifications[0].events[1]",
                "unknown event \"run.finished\"",
            ),
            (
                "notifications[0].events[2]",
                "unknown event \"step.faild\"; did you mean \"step.failed\"?",
            ),
            (
                "notifications[0]",
                "a notification needs somewhere to send to",
            ),
            ("notifications[1].events", "list at least one event"),
            (
                "notifications[1].webhook_url",
                "is not an http:// or https:// URL",
            ),
        ],
    );
}

/// The core promise: structural and semantic problems across the whole document, in one answer.
#[test]
fn many_problems_are_reported_together() {
    let text = "\
id: Release Pipeline
inputs:
  version: {type: string, required: true, default: '1.0'}
triggers:
  - {type: schedule, expression: 'rate(0 days)'}
steps:
  - id: build
    kind: agent
    workflow: implement
    message: 'Build ${{ inputs.verison }}'
    max_turns: 500
    timeout: forever
  - id: test
    kind: agent
    workflow: test
    message: 'Test ${{ steps.build.output }}'
    depends_on: [biuld, deploy]
    retry: {max_attempts: 50}
  - id: deploy
    kind: http
    url: 'https://deploy.example.com'
    depends_on: [test]
    colour: blue
  - id: test
    kind: wait
    duration: 1m
notifications:
  - {events: [run.exploded], slack_channel: '#c'}
";
    // `timeout: forever` is a type error, so the typed definition cannot be built: the
    // structural problems come back, and after fixing it the semantic ones do too.
    assert_problems(
        "type error and unknown field",
        text,
        &[
            ("steps[0].timeout", "invalid duration \"forever\""),
            ("steps[2].colour", "unknown field \"colour\""),
        ],
    );
    let fixed = text.replace("timeout: forever", "timeout: 1h");
    assert_problems(
        "everything else at once",
        &fixed,
        &[
            ("id", "workflow id \"Release Pipeline\" is not valid"),
            (
                "inputs.version.required",
                "remove `required: true` or the default",
            ),
            ("steps[0].max_turns", "between 1 and 200, got 500"),
            (
                "steps[0].message",
                "template uses input \"verison\", which is not declared (declared inputs: version); did you mean \"version\"?",
            ),
            (
                "steps[1].depends_on[0]",
                "unknown step \"biuld\"; did you mean \"build\"?",
            ),
            (
                "steps[1].depends_on",
                "dependency cycle: test → deploy → test",
            ),
            ("steps[1].retry.max_attempts", "between 1 and 20"),
            (
                "steps[1].message",
                "template uses step \"build\", which is not upstream of \"test\"",
            ),
            ("steps[2].colour", "unknown field \"colour\""),
            (
                "steps[3].id",
                "duplicate step id \"test\": steps[1] already uses it",
            ),
            (
                "triggers[0].expression",
                "rate value \"0\" must be a whole number of 1 or more",
            ),
            (
                "notifications[0].events[0]",
                "unknown event \"run.exploded\"",
            ),
        ],
    );
}

#[test]
fn validation_errors_display_lists_every_problem() {
    let err = parse_definition("id: W\nsteps: []\n").expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.starts_with("the workflow definition has 2 problems"),
        "{text}"
    );
    assert!(
        text.contains("\n  - id: workflow id \"W\" is not valid"),
        "{text}"
    );
    assert!(
        text.contains("\n  - steps: a workflow needs at least one step"),
        "{text}"
    );
    let one = parse_definition("[").expect_err("invalid");
    assert!(
        one.to_string()
            .starts_with("the workflow definition has 1 problem;"),
        "{one}"
    );
    assert!(
        one.to_string().contains("invalid YAML") && one.to_string().contains(" column "),
        "{one}"
    );
    assert_eq!(one.problems().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Formats and round trips
// ---------------------------------------------------------------------------------------------

const EQUIVALENT_YAML: &str = r#"
id: ship
timeout: 2h
inputs:
  branch: {type: string, default: main}
steps:
  - id: build
    kind: agent
    workflow: implement
    message: "Build ${{ inputs.branch }}"
    max_turns: 20
    retry: {max_attempts: 3, backoff: fixed, initial_delay: 10s}
  - id: call
    kind: http
    method: POST
    url: https://example.com/hook
    depends_on: [build]
    body: {text: "${{ steps.build.output }}", n: 1}
    compensate: {kind: http, method: DELETE, url: "https://example.com/hook/${{ steps.call.output.id }}"}
  - id: pause
    kind: wait
    duration: 90
    depends_on: [call]
    when: always
triggers:
  - {type: webhook, id: gh, inputs: {branch: /ref}}
outputs:
  built: "${{ steps.build.output }}"
"#;

#[test]
fn yaml_and_equivalent_json_give_equal_definitions() {
    let json = json!({
        "id": "ship",
        "timeout": "2h",
        "inputs": {"branch": {"type": "string", "default": "main"}},
        "steps": [
            {"id": "build", "kind": "agent", "workflow": "implement",
             "message": "Build ${{ inputs.branch }}", "max_turns": 20,
             "retry": {"max_attempts": 3, "backoff": "fixed", "initial_delay": "10s"}},
            {"id": "call", "kind": "http", "method": "POST", "url": "https://example.com/hook",
             "depends_on": ["build"], "body": {"text": "${{ steps.build.output }}", "n": 1},
             "compensate": {"kind": "http", "method": "DELETE",
                            "url": "https://example.com/hook/${{ steps.call.output.id }}"}},
            {"id": "pause", "kind": "wait", "duration": 90, "depends_on": ["call"], "when": "always"}
        ],
        "triggers": [{"type": "webhook", "id": "gh", "inputs": {"branch": "/ref"}}],
        "outputs": {"built": "${{ steps.build.output }}"}
    });
    let from_yaml = parse_ok("yaml", EQUIVALENT_YAML);
    let from_json_text = parse_ok("json", &serde_json::to_string_pretty(&json).expect("json"));
    let from_json_value = parse_definition_value(&json).expect("valid");
    assert_eq!(from_yaml, from_json_text);
    assert_eq!(from_yaml, from_json_value);
    // The typed values are what was written.
    assert_eq!(
        from_yaml.timeout.as_ref().map(|t| t.as_millis()),
        Some(7_200_000)
    );
    let pause = from_yaml.step("pause").expect("pause");
    assert!(matches!(&pause.action, StepAction::Wait(w) if w.duration.as_millis() == 90_000));
    assert_eq!(pause.when, When::Always);
}

#[test]
fn typed_definition_round_trips_through_json() {
    let def = parse_ok("yaml", EQUIVALENT_YAML);
    let value = serde_json::to_value(&def).expect("serializes");
    assert_eq!(parse_definition_value(&value), Ok(def.clone()));
    let text = serde_json::to_string(&def).expect("serializes");
    assert_eq!(parse_definition(&text), Ok(def));
}

#[test]
fn validate_works_on_definitions_built_in_code() {
    let mut def = parse_ok("yaml", EQUIVALENT_YAML);
    assert!(validate(&def).is_empty());
    def.steps[0].depends_on.push("pause".into());
    let problems = validate(&def);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "steps[0].depends_on");
    assert!(
        problems[0].message.contains("build → pause → call → build"),
        "{problems:?}"
    );
}

#[test]
fn upstream_steps_are_transitive_and_exclude_the_step() {
    let def = parse_ok("yaml", EQUIVALENT_YAML);
    assert_eq!(
        upstream_steps(&def, "pause"),
        BTreeSet::from(["build", "call"])
    );
    assert_eq!(upstream_steps(&def, "build"), BTreeSet::new());
    assert_eq!(upstream_steps(&def, "ghost"), BTreeSet::new());
}

// ---------------------------------------------------------------------------------------------
// Run inputs
// ---------------------------------------------------------------------------------------------

fn inputs_def() -> WorkflowDefinition {
    parse_ok(
        "inputs",
        "id: w\ninputs:\n  issue: {type: string, required: true}\n  count: {type: integer, default: 3}\n  ratio: {type: number}\n  flags: {type: object}\n  tags: {type: array}\n  dry_run: {type: boolean, default: false}\nsteps:\n  - {id: ok, kind: notify, slack_channel: '#c', message: hi}\n",
    )
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn resolve_inputs_fills_defaults_and_keeps_given_values() {
    let def = inputs_def();
    let resolved = resolve_inputs(
        &def,
        &map(json!({"issue": "fix it", "ratio": 2, "tags": ["a"]})),
    );
    assert_eq!(
        resolved,
        Ok(map(json!({
            "issue": "fix it",
            "count": 3,
            "ratio": 2,
            "tags": ["a"],
            "dry_run": false,
        })))
    );
    // Given values win over defaults; null means "not given".
    let resolved = resolve_inputs(
        &def,
        &map(json!({"issue": "x", "count": 7, "dry_run": null, "flags": {"a": 1}, "ratio": 0.5})),
    );
    assert_eq!(
        resolved,
        Ok(map(
            json!({"issue": "x", "count": 7, "dry_run": false, "flags": {"a": 1}, "ratio": 0.5})
        ))
    );
}

#[test]
fn resolve_inputs_reports_every_problem() {
    let def = inputs_def();
    let problems = resolve_inputs(
        &def,
        &map(json!({"isue": "x", "count": 2.5, "flags": [1], "dry_run": "yes", "tags": {}})),
    )
    .expect_err("invalid");
    let got: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("inputs.count", "expected an integer, found a number"),
            ("inputs.dry_run", "expected a boolean, found a string"),
            ("inputs.flags", "expected an object, found a list"),
            ("inputs.issue", "required input \"issue\" is missing"),
            (
                "inputs.isue",
                "unknown input \"isue\"; this workflow takes: count, dry_run, flags, issue, ratio, tags; did you mean \"issue\"?"
            ),
            ("inputs.tags", "expected an array, found a mapping"),
        ]
    );
    // Required and null is missing.
    let problems = resolve_inputs(&def, &map(json!({"issue": null}))).expect_err("missing");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "inputs.issue");
}

#[test]
fn resolve_inputs_for_a_workflow_without_inputs() {
    let def = parse_ok("none", &format!("id: w\nsteps:\n{OK_STEP}"));
    assert_eq!(resolve_inputs(&def, &Map::new()), Ok(Map::new()));
    let problems = resolve_inputs(&def, &map(json!({"x": 1}))).expect_err("unknown");
    assert_eq!(
        problems,
        [Problem {
            path: "inputs.x".into(),
            message: "unknown input \"x\"; this workflow takes no inputs".into()
        }]
    );
}

#[test]
fn polling_and_budget_problems() {
    let text = "\
id: caps
polling: {initial: 0s, factor: 0.5, max: 1h}
budget: {}
steps:
  - {id: a, kind: agent, workflow: implement, message: go, budget: {max_cost_usd: -1, max_turns: 0, max_duration: 0s}}
  - {id: b, kind: agent, workflow: implement, message: go, budget: {max_cost: 3}}
";
    assert_problems(
        "caps",
        text,
        &[("steps[1].budget.max_cost", "unknown field `max_cost`")],
    );
    let text = "\
id: caps
polling: {initial: 0s, factor: 0.5, max: 1h, progress_every: 0s}
budget: {}
steps:
  - {id: a, kind: agent, workflow: implement, message: go, budget: {max_cost_usd: -1, max_turns: 0, max_duration: 0s}}
";
    assert_problems(
        "caps",
        text,
        &[
            ("steps[0].budget.max_cost_usd", "must be a positive amount"),
            ("steps[0].budget.max_turns", "at least 1"),
            ("steps[0].budget.max_duration", "longer than 0"),
            ("polling.initial", "longer than 0"),
            ("polling.progress_every", "longer than 0"),
            (
                "polling.factor",
                "between 1 (fixed interval) and 10, got 0.5",
            ),
            ("polling.max", "longer than 15m"),
            ("budget", "at least one of max_cost_usd"),
        ],
    );
    let ok = "\
id: caps
polling: {initial: 8s, factor: 1, max: 8s}
budget: {max_cost_usd: 25, max_duration: 2h}
steps:
  - {id: a, kind: agent, workflow: implement, message: go, budget: {max_turns: 150}}
";
    let def = parse_ok("caps-ok", ok);
    assert_eq!(def.polling.expect("polling").max.as_millis(), 8_000);
    assert_eq!(def.budget.expect("budget").max_cost_usd, Some(25.0));
}

#[test]
fn a_completion_template_that_cannot_render_is_refused_when_stored() {
    let text = "id: y\ninputs:\n  repo: {type: string}\ntriggers:\n  - type: workflow_completed\n    workflow: x\n    inputs: {repo: '${{ run.outputz.repo }}'}\nsteps:\n  - {id: s, kind: wait, duration: 1s}\n";
    let problems = match parse_definition(text) {
        Ok(def) => panic!("expected a problem, but it validated: {def:?}"),
        Err(e) => e.problems().to_vec(),
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "triggers[0].inputs.repo", "{problems:?}");
    let good = text.replace("outputz", "outputs");
    assert!(
        parse_definition(&good).is_ok(),
        "{:?}",
        parse_definition(&good)
    );
}

#[test]
fn concurrency_problems() {
    let text = "\
id: limited
inputs:
  repo: {type: string}
concurrency: {limit: 0, key: fixed}
steps:
  - {id: a, kind: wait, duration: 1s}
";
    assert_problems(
        "limited",
        text,
        &[
            ("concurrency.limit", "between 1 and 100"),
            ("concurrency.key", "same for every run"),
        ],
    );
    let text = "\
id: limited
inputs:
  repo: {type: string}
concurrency: {limit: 101, key: \"${{ steps.a.output }}\"}
steps:
  - {id: a, kind: wait, duration: 1s}
";
    assert_problems(
        "limited",
        text,
        &[
            ("concurrency.limit", "between 1 and 100"),
            ("concurrency.key", "may only use inputs"),
        ],
    );
    let text = "\
id: limited
concurrency: {limit: 2, key: \"${{ inputs.nope }}\", when_full: later}
steps:
  - {id: a, kind: wait, duration: 1s}
";
    assert_problems("limited", text, &[("concurrency.when_full", "later")]);
    let text = "\
id: limited
inputs:
  repo: {type: string}
concurrency: {limit: 2, key: \"${{ inputs.nope }}\"}
steps:
  - {id: a, kind: wait, duration: 1s}
";
    assert_problems("limited", text, &[("concurrency.key", "input \"nope\"")]);
    let ok = parse_definition(
        "\
id: limited
inputs:
  repo: {type: string}
concurrency: {limit: 2, key: \"${{ inputs.repo }}\", when_full: reject}
steps:
  - {id: a, kind: wait, duration: 1s}
",
    )
    .expect("valid");
    let c = ok.concurrency.expect("concurrency");
    assert_eq!((c.limit, c.when_full), (2, WhenFull::Reject));
}
