//! Semantic checks on a typed definition: ids, the dependency graph, ranges, templates,
//! triggers and notifications. Every check reports and moves on, so one pass finds everything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::Problem;
use super::schedule;
use super::support::{ID_RULE, describe, did_you_mean, index, is_id, is_input_name, join, list};
use crate::definition::{
    ApprovalAction, Budget, LIFECYCLE_EVENTS, MAX_AGENT_TURNS, MAX_STEPS, OnExpiry, PollingPolicy,
    RetryPolicy, StepAction, StepKind, TriggerDef, When, WorkflowDefinition,
};
use crate::duration::DurationSpec;
use crate::model::RunStatus;
use crate::template::{self, Reference};

/// Above this many steps the graph-wide checks (cycles, upstream sets) are skipped: the definition
/// is already refused for having more than [`MAX_STEPS`], and the checks grow quadratically.
const GRAPH_CHECK_LIMIT: usize = 10 * MAX_STEPS;

/// Most cycles named per group of mutually dependent steps; more add nothing a person can act on.
const MAX_CYCLES_PER_GROUP: usize = 5;

/// Run every semantic check.
pub(super) fn check(def: &WorkflowDefinition) -> Vec<Problem> {
    let mut c = Checker::new(def);
    c.workflow();
    c.inputs();
    c.check_step_ids();
    c.dependencies();
    if def.steps.len() <= GRAPH_CHECK_LIMIT {
        c.cycles();
        c.sessions();
    }
    for i in 0..def.steps.len() {
        c.step(i);
    }
    c.outputs();
    c.triggers();
    c.notifications();
    c.problems
}

/// Where a template is used, which decides which steps it may read.
#[derive(Debug, Clone, Copy)]
enum Scope {
    /// A step's own parameters: only its upstream steps have finished.
    Step(usize),
    /// A step's compensate action: runs after the step itself finished.
    Compensate(usize),
    /// Workflow outputs: rendered when the run ends, any step may be read.
    Outputs,
}

struct Checker<'d> {
    def: &'d WorkflowDefinition,
    /// Step id → index of its first occurrence.
    index: HashMap<&'d str, usize>,
    /// `deps[i]`: indices of the known steps step `i` directly depends on (no self, no repeats).
    deps: Vec<Vec<usize>>,
    /// `upstream[i]`, computed on first use.
    upstream: Vec<Option<HashSet<usize>>>,
    problems: Vec<Problem>,
}

impl<'d> Checker<'d> {
    fn new(def: &'d WorkflowDefinition) -> Self {
        let mut index = HashMap::new();
        for (i, s) in def.steps.iter().enumerate() {
            index.entry(s.id.as_str()).or_insert(i);
        }
        let deps = def
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut seen = Vec::new();
                for d in &s.depends_on {
                    if let Some(&j) = index.get(d.as_str())
                        && j != i
                        && !seen.contains(&j)
                    {
                        seen.push(j);
                    }
                }
                seen
            })
            .collect();
        Self {
            def,
            index,
            deps,
            upstream: vec![None; def.steps.len()],
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let p = Problem {
            path: path.into(),
            message: message.into(),
        };
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    fn step_path(i: usize) -> String {
        index("steps", i)
    }

    fn ids(&self) -> impl Iterator<Item = &'d str> + use<'d> {
        self.def.steps.iter().map(|s| s.id.as_str())
    }

    /// Every step `i` transitively depends on (excluding `i`, even in a cycle).
    fn upstream(&mut self, i: usize) -> &HashSet<usize> {
        if self.upstream[i].is_none() {
            let mut seen = HashSet::new();
            let mut stack: Vec<usize> = self.deps[i].clone();
            while let Some(j) = stack.pop() {
                if seen.insert(j) {
                    stack.extend(self.deps[j].iter().copied());
                }
            }
            seen.remove(&i);
            self.upstream[i] = Some(seen);
        }
        self.upstream[i].get_or_insert_with(HashSet::new)
    }

    fn workflow(&mut self) {
        let def = self.def;
        if !is_id(&def.id) {
            self.problem(
                "id",
                format!("workflow id {:?} is not valid: {ID_RULE}", def.id),
            );
        }
        if def.steps.is_empty() {
            self.problem("steps", "a workflow needs at least one step");
        }
        if def.steps.len() > MAX_STEPS {
            self.problem(
                "steps",
                format!(
                    "{} steps is more than the {MAX_STEPS} allowed; split the work into several workflows chained with a workflow_completed trigger",
                    def.steps.len()
                ),
            );
        }
        if let Some(t) = &def.timeout {
            self.positive_duration("timeout", "the run timeout", t);
        }
        if let Some(p) = &def.polling {
            self.polling(p);
        }
        if let Some(b) = &def.budget {
            self.budget(b, "budget");
        }
        if let Some(c) = &def.concurrency {
            self.concurrency(c);
        }
    }

    fn concurrency(&mut self, c: &crate::definition::ConcurrencyLimit) {
        let max = crate::definition::ConcurrencyLimit::MAX;
        if !(1..=max).contains(&c.limit) {
            self.problem(
                "concurrency.limit",
                format!("limit must be between 1 and {max}, got {}", c.limit),
            );
        }
        let Some(key) = &c.key else { return };
        if !template::is_templated(key) {
            self.problem(
                "concurrency.key",
                format!(
                    "key {key:?} is the same for every run, so it changes nothing; write a template over the inputs like \"${{{{ inputs.repository }}}}\" or remove it"
                ),
            );
            return;
        }
        // Only inputs are known when a run starts.
        if let Ok(refs) = template::references(key)
            && let Some(r) = refs.iter().find(|r| !matches!(r, Reference::Input(_)))
        {
            self.problem(
                "concurrency.key",
                format!(
                    "key may only use inputs (${{{{ inputs.<name> }}}}), found {r:?}; a run's steps have not run when it is counted"
                ),
            );
            return;
        }
        self.template(key, "concurrency.key".to_string(), Scope::Outputs);
    }

    fn polling(&mut self, p: &PollingPolicy) {
        self.positive_duration("polling.initial", "the first poll interval", &p.initial);
        if let Some(every) = &p.progress_every {
            self.positive_duration(
                "polling.progress_every",
                "the interval between progress writes",
                every,
            );
        }
        if !(p.factor.is_finite() && (1.0..=10.0).contains(&p.factor)) {
            self.problem(
                "polling.factor",
                format!(
                    "factor must be between 1 (fixed interval) and 10, got {}",
                    p.factor
                ),
            );
        }
        if p.max.as_millis() < p.initial.as_millis() {
            self.problem(
                "polling.max",
                format!(
                    "max ({}) is shorter than initial ({}); make it at least as long",
                    p.max, p.initial
                ),
            );
        }
        if p.max.as_millis() > PollingPolicy::MAX_INTERVAL_MS {
            self.problem(
                "polling.max",
                format!(
                    "max ({}) is longer than 15m, the longest a queue message can be delayed",
                    p.max
                ),
            );
        }
    }

    fn budget(&mut self, b: &Budget, path: &str) {
        if b.max_cost_usd.is_none() && b.max_turns.is_none() && b.max_duration.is_none() {
            self.problem(
                path,
                "a budget needs at least one of max_cost_usd, max_turns, max_duration",
            );
        }
        if let Some(c) = b.max_cost_usd
            && !(c.is_finite() && c > 0.0)
        {
            self.problem(
                join(path, "max_cost_usd"),
                format!("max_cost_usd must be a positive amount of US dollars, got {c}"),
            );
        }
        if b.max_turns == Some(0) {
            self.problem(join(path, "max_turns"), "max_turns must be at least 1");
        }
        if let Some(d) = &b.max_duration {
            self.positive_duration(join(path, "max_duration"), "max_duration", d);
        }
        if !b.approvers.is_empty() && b.on_exceed != crate::definition::OnExceed::Ask {
            self.problem(
                join(path, "approvers"),
                "approvers answer the \"continue past the budget?\" question; set `on_exceed: ask` or remove them",
            );
        }
    }

    fn positive_duration(&mut self, path: impl Into<String>, what: &str, d: &DurationSpec) {
        if d.as_millis() == 0 {
            self.problem(
                path,
                format!("{what} must be longer than 0 (got {:?})", d.as_str()),
            );
        }
    }

    fn inputs(&mut self) {
        for (name, spec) in &self.def.inputs {
            let path = join("inputs", name);
            if !is_input_name(name) {
                self.problem(
                    &path,
                    format!(
                        "input name {name:?} is not valid: use letters, digits and \"_\", not starting with a digit (it is written as inputs.{name} in templates)"
                    ),
                );
            }
            if let Some(default) = &spec.default {
                if !spec.kind.accepts(default) {
                    self.problem(
                        join(&path, "default"),
                        format!(
                            "default must be of the declared type {}, found {}",
                            spec.kind.as_str(),
                            describe(default)
                        ),
                    );
                }
                if spec.required {
                    self.problem(
                        join(&path, "required"),
                        "an input with a default is never missing; remove `required: true` or the default",
                    );
                }
            }
        }
    }

    fn check_step_ids(&mut self) {
        let def = self.def;
        for (i, s) in def.steps.iter().enumerate() {
            let path = join(&Self::step_path(i), "id");
            if !is_id(&s.id) {
                self.problem(path, format!("step id {:?} is not valid: {ID_RULE}", s.id));
            } else if let Some(&first) = self.index.get(s.id.as_str())
                && first != i
            {
                self.problem(
                    path,
                    format!(
                        "duplicate step id \"{}\": steps[{first}] already uses it; give each step its own id",
                        s.id
                    ),
                );
            }
        }
    }

    fn dependencies(&mut self) {
        let def = self.def;
        for (i, step) in def.steps.iter().enumerate() {
            let mut listed: HashMap<&str, usize> = HashMap::new();
            for (k, dep) in step.depends_on.iter().enumerate() {
                let path = index(&join(&Self::step_path(i), "depends_on"), k);
                if let Some(first) = listed.get(dep.as_str()) {
                    self.problem(
                        path,
                        format!("\"{dep}\" is listed twice in depends_on (first at depends_on[{first}]); remove one"),
                    );
                    continue;
                }
                listed.insert(dep.as_str(), k);
                if *dep == step.id {
                    self.problem(
                        path,
                        format!("step \"{dep}\" depends on itself; remove it from depends_on"),
                    );
                } else if !self.index.contains_key(dep.as_str()) {
                    let hint = did_you_mean(dep, self.ids());
                    let message = if hint.is_empty() {
                        format!("unknown step \"{dep}\"; steps are: {}", list(self.ids()))
                    } else {
                        format!("unknown step \"{dep}\"{hint}")
                    };
                    self.problem(path, message);
                }
            }
            if step.when == When::Failure && step.depends_on.is_empty() {
                self.problem(
                    join(&Self::step_path(i), "when"),
                    "`when: failure` runs a step after a dependency failed, but this step has no depends_on; add the steps it reacts to",
                );
            }
        }
    }

    /// Name every dependency cycle once (up to a few per group of mutually dependent steps).
    fn cycles(&mut self) {
        let def = self.def;
        let n = def.steps.len();
        for component in strongly_connected(&self.deps) {
            if component.len() < 2 {
                continue;
            }
            let members: HashSet<usize> = component.iter().copied().collect();
            let mut found = elementary_cycles(&self.deps, &component, &members);
            if found.is_empty()
                && let Some(&start) = component.first()
                && let Some(c) = shortest_cycle(&self.deps, start, &members, n)
            {
                found.push(c);
            }
            let truncated = found.len() > MAX_CYCLES_PER_GROUP;
            for cycle in found.into_iter().take(MAX_CYCLES_PER_GROUP) {
                let Some(&first) = cycle.first() else {
                    continue;
                };
                let names: Vec<&str> = cycle
                    .iter()
                    .chain(std::iter::once(&first))
                    .map(|&j| def.steps[j].id.as_str())
                    .collect();
                let more = if truncated {
                    " (these steps form more cycles too)"
                } else {
                    ""
                };
                self.problem(
                    join(&Self::step_path(first), "depends_on"),
                    format!(
                        "dependency cycle: {} (each step depends on the next, so none of them can start){more}; remove one of these dependencies",
                        names.join(" → ")
                    ),
                );
            }
        }
    }

    /// Steps sharing an agent session continue one conversation, so they must run one after another.
    fn sessions(&mut self) {
        let def = self.def;
        let mut by_session: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in def.steps.iter().enumerate() {
            if let StepAction::Agent(a) = &s.action
                && let Some(session) = &a.session
            {
                if session.trim().is_empty() {
                    self.problem(
                        join(&Self::step_path(i), "session"),
                        "session is empty; name the conversation (e.g. \"design\") or remove session",
                    );
                    continue;
                }
                by_session.entry(session.as_str()).or_default().push(i);
            }
        }
        for (session, users) in by_session {
            for (pos, &j) in users.iter().enumerate() {
                let conflict = users[..pos].iter().copied().find(|&i| {
                    let i_before_j = self.upstream(j).contains(&i);
                    !i_before_j && !self.upstream(i).contains(&j)
                });
                if let Some(i) = conflict {
                    let (a, b) = (&def.steps[i].id, &def.steps[j].id);
                    self.problem(
                        join(&Self::step_path(j), "session"),
                        format!(
                            "session \"{session}\" is also used by step \"{a}\", which can run at the same time as \"{b}\"; add \"{a}\" to depends_on of \"{b}\" (directly or through another step) so the conversation continues in order"
                        ),
                    );
                }
            }
        }
    }

    fn step(&mut self, i: usize) {
        let def = self.def;
        let step = &def.steps[i];
        let path = Self::step_path(i);
        if let Some(t) = &step.timeout {
            self.positive_duration(join(&path, "timeout"), "timeout", t);
        }
        if let Some(r) = &step.retry {
            self.retry(r, &join(&path, "retry"));
        }
        self.action(&step.action, &path, Scope::Step(i));
        if let StepAction::Approval(a) = &step.action {
            self.approval_timers(i, a, &path);
        }
        if let Some(comp) = &step.compensate {
            let cpath = join(&path, "compensate");
            if matches!(comp.kind(), StepKind::Approval | StepKind::Wait) {
                self.problem(
                    join(&cpath, "kind"),
                    format!(
                        "a compensate action must be agent, http or notify, not {} (compensation runs unattended)",
                        comp.kind().as_str()
                    ),
                );
            } else {
                self.action(comp, &cpath, Scope::Compensate(i));
            }
        }
    }

    /// Reminders, timed escalation and the step that "retry with feedback" runs again.
    fn approval_timers(&mut self, i: usize, a: &ApprovalAction, path: &str) {
        if let Some(e) = &a.remind_every {
            self.positive_duration(join(path, "remind_every"), "remind_every", e);
        }
        if let Some(e) = &a.escalate_after {
            self.positive_duration(join(path, "escalate_after"), "escalate_after", e);
            if a.escalate_to.is_empty() {
                self.problem(
                    join(path, "escalate_after"),
                    "escalate_after needs someone to escalate to; list them in escalate_to",
                );
            }
        }
        if let Some(target) = &a.retry_step {
            let def = self.def;
            let found = def.steps.iter().position(|s| &s.id == target);
            let upstream = self.upstream(i).clone();
            match found {
                Some(j) if upstream.contains(&j) && matches!(def.steps[j].action, StepAction::Agent(_)) => {}
                Some(j) if !matches!(def.steps[j].action, StepAction::Agent(_)) => self.problem(
                    join(path, "retry_step"),
                    format!("retry_step {target:?} is not an agent step; name the agent step whose work is being approved"),
                ),
                Some(_) => self.problem(
                    join(path, "retry_step"),
                    format!("retry_step {target:?} is not upstream of this approval; add it to depends_on (directly or through other steps)"),
                ),
                None => self.problem(
                    join(path, "retry_step"),
                    format!("retry_step {target:?} is not a step of this workflow"),
                ),
            }
        }
    }

    fn retry(&mut self, r: &RetryPolicy, path: &str) {
        if !(1..=RetryPolicy::MAX_ATTEMPTS).contains(&r.max_attempts) {
            self.problem(
                join(path, "max_attempts"),
                format!(
                    "max_attempts must be between 1 and {} (it counts the first attempt), got {}",
                    RetryPolicy::MAX_ATTEMPTS,
                    r.max_attempts
                ),
            );
        }
        if r.initial_delay.as_millis() > r.max_delay.as_millis() {
            self.problem(
                join(path, "initial_delay"),
                format!(
                    "initial_delay ({}) is longer than max_delay ({}; 5m when not set); shorten initial_delay or raise max_delay",
                    r.initial_delay, r.max_delay
                ),
            );
        }
    }

    /// Checks one action (a step's, or its compensate block's) at `path`.
    fn action(&mut self, action: &StepAction, path: &str, scope: Scope) {
        match action {
            StepAction::Agent(a) => {
                if a.workflow.trim().is_empty() || a.workflow.contains(['/', ' ', '\t', '\n']) {
                    self.problem(
                        join(path, "workflow"),
                        format!(
                            "agent workflow {:?} is not valid: name one of the agent service's workflows, like \"architect\" (no spaces or \"/\")",
                            a.workflow
                        ),
                    );
                }
                self.non_empty(
                    &a.message,
                    join(path, "message"),
                    "say what the agent should do",
                );
                if let Some(b) = &a.budget {
                    self.budget(b, &join(path, "budget"));
                }
                if let Some(t) = a.max_turns
                    && !(1..=MAX_AGENT_TURNS).contains(&t)
                {
                    self.problem(
                        join(path, "max_turns"),
                        format!("max_turns must be between 1 and {MAX_AGENT_TURNS}, got {t}"),
                    );
                }
                self.template(&a.message, join(path, "message"), scope);
                if let Some(u) = &a.repository_url {
                    self.template(u, join(path, "repository_url"), scope);
                }
                if let Some(b) = &a.git_branch {
                    self.template(b, join(path, "git_branch"), scope);
                }
            }
            StepAction::Approval(a) => {
                self.non_empty(
                    &a.message,
                    join(path, "message"),
                    "tell the approvers what they decide",
                );
                if a.required == 0 {
                    self.problem(join(path, "required"), "required must be at least 1");
                } else if !a.approvers.is_empty() && a.required as usize > a.approvers.len() {
                    self.problem(
                        join(path, "required"),
                        format!(
                            "required is {} but only {} approver(s) are listed; lower required or add approvers",
                            a.required,
                            a.approvers.len()
                        ),
                    );
                }
                if let Some(e) = &a.expires_in {
                    self.positive_duration(join(path, "expires_in"), "expires_in", e);
                } else if a.on_expiry != OnExpiry::default() {
                    self.problem(
                        join(path, "on_expiry"),
                        "on_expiry only applies when the approval expires; set expires_in",
                    );
                }
                if a.on_expiry == OnExpiry::Escalate && a.escalate_to.is_empty() {
                    self.problem(
                        join(path, "escalate_to"),
                        "`on_expiry: escalate` needs someone to escalate to; list them in escalate_to",
                    );
                }
                self.template(&a.message, join(path, "message"), scope);
            }
            StepAction::Notify(n) => {
                self.non_empty(
                    &n.message,
                    join(path, "message"),
                    "write the message to send",
                );
                if n.slack_channel.is_none() && n.webhook_url.is_none() {
                    self.problem(
                        path,
                        "a notify action needs somewhere to send to: set slack_channel, webhook_url or both",
                    );
                }
                if let Some(u) = &n.webhook_url {
                    self.url(u, join(path, "webhook_url"));
                }
                self.template(&n.message, join(path, "message"), scope);
            }
            StepAction::Http(h) => {
                self.url(&h.url, join(path, "url"));
                for (k, status) in h.expect_status.iter().enumerate() {
                    if !(100..=599).contains(status) {
                        self.problem(
                            index(&join(path, "expect_status"), k),
                            format!("{status} is not an HTTP status code; use 100 to 599"),
                        );
                    }
                }
                self.template(&h.url, join(path, "url"), scope);
                for (name, value) in &h.headers {
                    self.template(value, join(&join(path, "headers"), name), scope);
                }
                if let Some(body) = &h.body {
                    let mut leaves = Vec::new();
                    string_leaves(body, join(path, "body"), &mut leaves);
                    for (p, s) in leaves {
                        self.template(s, p, scope);
                    }
                }
            }
            StepAction::Wait(w) => {
                self.positive_duration(join(path, "duration"), "a wait duration", &w.duration);
            }
        }
    }

    fn non_empty(&mut self, text: &str, path: String, what_to_do: &str) {
        if text.trim().is_empty() {
            self.problem(path, format!("message is empty; {what_to_do}"));
        }
    }

    /// A URL must be http(s) unless a template supplies its start.
    fn url(&mut self, url: &str, path: String) {
        let url = url.trim();
        if url.is_empty() {
            self.problem(path, "url is empty; write an http:// or https:// URL");
        } else if !url.starts_with("${{")
            && !url.starts_with("https://")
            && !url.starts_with("http://")
        {
            self.problem(path, format!("{url:?} is not an http:// or https:// URL"));
        }
    }

    /// Template syntax and what it refers to.
    fn template(&mut self, text: &str, path: String, scope: Scope) {
        if !template::is_templated(text) {
            return;
        }
        let refs = match template::references(text) {
            Ok(refs) => refs,
            Err(e) => {
                self.problem(path, e.to_string());
                return;
            }
        };
        for r in refs {
            match &r {
                Reference::Input(name) => {
                    if !self.def.inputs.contains_key(name) {
                        let message = if self.def.inputs.is_empty() {
                            format!(
                                "template uses input \"{name}\", but the workflow declares no inputs; declare it under inputs"
                            )
                        } else {
                            format!(
                                "template uses input \"{name}\", which is not declared (declared inputs: {}){}",
                                list(self.def.inputs.keys().map(String::as_str)),
                                did_you_mean(name, self.def.inputs.keys().map(String::as_str))
                            )
                        };
                        self.problem(&path, message);
                    }
                }
                Reference::StepOutput { step, .. } | Reference::StepStatus(step) => {
                    self.step_reference(step, &path, scope);
                }
                Reference::Run(_) => {}
            }
        }
    }

    fn step_reference(&mut self, step: &str, path: &str, scope: Scope) {
        let Some(&target) = self.index.get(step) else {
            let hint = did_you_mean(step, self.ids());
            self.problem(
                path,
                format!(
                    "template uses step \"{step}\", which does not exist{}",
                    if hint.is_empty() {
                        format!("; steps are: {}", list(self.ids()))
                    } else {
                        hint
                    }
                ),
            );
            return;
        };
        let (user, own_ok) = match scope {
            Scope::Outputs => return,
            Scope::Step(i) => (i, false),
            Scope::Compensate(i) => (i, true),
        };
        if self.def.steps.len() > GRAPH_CHECK_LIMIT {
            return;
        }
        if target == user {
            if !own_ok {
                self.problem(
                    path,
                    "a step cannot use its own output or status: it has not finished when its parameters are rendered",
                );
            }
            return;
        }
        if !self.upstream(user).contains(&target) {
            let def = self.def;
            let me = &def.steps[user].id;
            self.problem(
                path,
                format!(
                    "template uses step \"{step}\", which is not upstream of \"{me}\"; add \"{step}\" to depends_on of \"{me}\" (directly or through another step) so it has finished first"
                ),
            );
        }
    }

    fn outputs(&mut self) {
        for (name, text) in &self.def.outputs {
            self.template(text, join("outputs", name), Scope::Outputs);
        }
    }

    fn triggers(&mut self) {
        /// Schedule names end in `.<n>` with at most two digits to spare (see `schedule`).
        const MAX_SCHEDULES: usize = 20;
        let mut schedules = 0usize;
        let mut webhook_ids: HashMap<&str, usize> = HashMap::new();
        for (i, t) in self.def.triggers.iter().enumerate() {
            let path = index("triggers", i);
            match t {
                TriggerDef::Schedule {
                    expression,
                    timezone,
                    inputs,
                    overlap: _,
                } => {
                    schedules += 1;
                    if schedules == MAX_SCHEDULES + 1 {
                        self.problem(
                            join(&path, "expression"),
                            format!("a workflow may have at most {MAX_SCHEDULES} schedules; combine them into fewer cron expressions"),
                        );
                    }
                    if let Err(msg) = schedule::check_expression(expression) {
                        self.problem(join(&path, "expression"), msg);
                    } else if let Err(e) = crate::schedule::Expression::parse(
                        expression,
                        crate::schedule::DEFAULT_TIMEZONE,
                    ) {
                        // Passed EventBridge's rules but cannot be evaluated locally.
                        self.problem(join(&path, "expression"), e.to_string());
                    }
                    if let Some(tz) = timezone
                        && crate::schedule::time_zone(tz).is_err()
                    {
                        self.problem(
                            join(&path, "timezone"),
                            format!("timezone {tz:?} is not an IANA time zone name like \"Europe/Paris\" or \"UTC\""),
                        );
                    }
                    for (name, value) in inputs {
                        let ipath = join(&join(&path, "inputs"), name);
                        match self.def.inputs.get(name) {
                            None => self.undeclared_trigger_input(name, ipath),
                            Some(spec) if !spec.kind.accepts(value) => self.problem(
                                ipath,
                                format!(
                                    "input \"{name}\" is declared as {}, found {}",
                                    spec.kind.as_str(),
                                    describe(value)
                                ),
                            ),
                            Some(_) => {}
                        }
                    }
                    self.required_inputs_given(inputs.keys(), &path, "scheduled");
                }
                TriggerDef::Webhook {
                    id, filter, inputs, ..
                } => {
                    if !is_id(id) {
                        self.problem(
                            join(&path, "id"),
                            format!("webhook id {id:?} is not valid: {ID_RULE}"),
                        );
                    } else if let Some(first) = webhook_ids.get(id.as_str()) {
                        self.problem(
                            join(&path, "id"),
                            format!("webhook id \"{id}\" is already used by triggers[{first}]; each webhook needs its own id"),
                        );
                    } else {
                        webhook_ids.insert(id, i);
                    }
                    for (pointer, expected) in filter {
                        let fpath = join(&join(&path, "filter"), pointer);
                        if !is_webhook_key(pointer) {
                            self.problem(
                                fpath,
                                format!("filter key {pointer:?} is not a JSON pointer or a header; write it like \"/action\", \"/pull_request/base/ref\" or \"header:x-github-event\""),
                            );
                        } else if pointer.starts_with("header:") && !expected.is_string() {
                            self.problem(
                                fpath,
                                format!("header values are text: write the expected value as a string, not {}", describe(expected)),
                            );
                        }
                    }
                    for (name, pointer) in inputs {
                        let ipath = join(&join(&path, "inputs"), name);
                        if !self.def.inputs.contains_key(name) {
                            self.undeclared_trigger_input(name, ipath);
                        } else if !is_webhook_key(pointer) {
                            self.problem(
                                ipath,
                                format!("{pointer:?} is not a JSON pointer into the payload (or header:<name>); write it like \"/issue/body\""),
                            );
                        }
                    }
                    self.required_inputs_given(inputs.keys(), &path, "webhook-started");
                }
                TriggerDef::WorkflowCompleted {
                    workflow,
                    statuses,
                    inputs,
                } => {
                    if !is_id(workflow) {
                        self.problem(
                            join(&path, "workflow"),
                            format!("workflow id {workflow:?} is not valid: {ID_RULE}"),
                        );
                    }
                    for (k, s) in statuses.iter().enumerate() {
                        let spath = index(&join(&path, "statuses"), k);
                        match s.parse::<RunStatus>() {
                            Ok(status) if status.is_terminal() => {}
                            _ => {
                                let finals: Vec<&str> = RunStatus::ALL
                                    .iter()
                                    .filter(|s| s.is_terminal())
                                    .map(|s| s.as_str())
                                    .collect();
                                self.problem(
                                    spath,
                                    format!(
                                        "\"{s}\" is not a status a finished run can have{}; use {}",
                                        did_you_mean(s, finals.iter().copied()),
                                        list(finals.iter().copied())
                                    ),
                                );
                            }
                        }
                    }
                    for (name, text) in inputs {
                        let ipath = join(&join(&path, "inputs"), name);
                        if !self.def.inputs.contains_key(name) {
                            self.undeclared_trigger_input(name, ipath.clone());
                        }
                        // Caught when the workflow is stored, not as `chain.failed` later.
                        if let Err(e) = template::check_completion(text) {
                            self.problem(ipath, e.to_string());
                        }
                    }
                    self.required_inputs_given(inputs.keys(), &path, "chained");
                }
            }
        }
    }

    fn undeclared_trigger_input(&mut self, name: &str, path: String) {
        self.problem(
            path,
            format!(
                "\"{name}\" is not a declared input{}; declare it under inputs or remove it here",
                did_you_mean(name, self.def.inputs.keys().map(String::as_str))
            ),
        );
    }

    /// A trigger that starts runs must give every required input that has no default.
    fn required_inputs_given<'a>(
        &mut self,
        given: impl Iterator<Item = &'a String>,
        path: &str,
        what: &str,
    ) {
        let given: BTreeSet<&str> = given.map(String::as_str).collect();
        let missing: Vec<&str> = self
            .def
            .inputs
            .iter()
            .filter(|(name, spec)| {
                spec.required && spec.default.is_none() && !given.contains(name.as_str())
            })
            .map(|(name, _)| name.as_str())
            .collect();
        for name in missing {
            self.problem(
                join(path, "inputs"),
                format!(
                    "required input \"{name}\" gets no value, so {what} runs would be refused; give it a value here or a default under inputs.{name}"
                ),
            );
        }
    }

    fn notifications(&mut self) {
        for (i, n) in self.def.notifications.iter().enumerate() {
            let path = index("notifications", i);
            if n.events.is_empty() {
                self.problem(
                    join(&path, "events"),
                    format!("list at least one event: {}", list(LIFECYCLE_EVENTS)),
                );
            }
            for (k, e) in n.events.iter().enumerate() {
                if !LIFECYCLE_EVENTS.contains(&e.as_str()) {
                    self.problem(
                        index(&join(&path, "events"), k),
                        format!(
                            "unknown event \"{e}\"{}; events are: {}",
                            did_you_mean(e, LIFECYCLE_EVENTS),
                            list(LIFECYCLE_EVENTS)
                        ),
                    );
                }
            }
            if n.slack_channel.is_none() && n.webhook_url.is_none() {
                self.problem(
                    &path,
                    "a notification needs somewhere to send to: set slack_channel, webhook_url or both",
                );
            }
            if let Some(u) = &n.webhook_url {
                self.url(u, join(&path, "webhook_url"));
            }
        }
    }
}

/// Every string leaf of a JSON value with its path (`body.items[0].title`).
fn string_leaves<'v>(v: &'v Value, path: String, out: &mut Vec<(String, &'v str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                string_leaves(item, index(&path, i), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                string_leaves(item, join(&path, k), out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Strongly connected components (Tarjan), each sorted, in order of their smallest member.
fn strongly_connected(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Tarjan<'g> {
        deps: &'g [Vec<usize>],
        next: usize,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.deps[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                self.out.push(component);
            }
        }
    }
    let n = deps.len();
    let mut t = Tarjan {
        deps,
        next: 0,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out.sort_by_key(|c| c.first().copied());
    t.out
}

/// Elementary cycles inside one component, each found once from its smallest member, following
/// `depends_on` edges. Bounded: stops after a few more than can be reported, or after a fixed
/// amount of search so a dense graph cannot make validation slow.
fn elementary_cycles(
    deps: &[Vec<usize>],
    component: &[usize],
    members: &HashSet<usize>,
) -> Vec<Vec<usize>> {
    const BUDGET: usize = 20_000;
    let mut found = Vec::new();
    let mut budget = BUDGET;
    for &start in component {
        let mut path = vec![start];
        let mut on_path = HashSet::from([start]);
        // Iterative DFS: a stack of (node, next edge position).
        let mut stack = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut pos)) = stack.last_mut() {
            if budget == 0 || found.len() > MAX_CYCLES_PER_GROUP {
                return found;
            }
            budget -= 1;
            let Some(&w) = deps[v].get(*pos) else {
                stack.pop();
                path.pop();
                on_path.remove(&v);
                continue;
            };
            *pos += 1;
            if w == start {
                found.push(path.clone());
            } else if w > start && members.contains(&w) && !on_path.contains(&w) {
                path.push(w);
                on_path.insert(w);
                stack.push((w, 0));
            }
        }
    }
    found
}

/// The shortest cycle through `start` within `members` (breadth-first), as a fallback when the
/// bounded enumeration gave up before finding one.
fn shortest_cycle(
    deps: &[Vec<usize>],
    start: usize,
    members: &HashSet<usize>,
    n: usize,
) -> Option<Vec<usize>> {
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = HashSet::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &deps[v] {
            if w == start {
                let mut cycle = vec![v];
                let mut cur = v;
                while let Some(p) = parent[cur] {
                    cycle.push(p);
                    cur = p;
                }
                cycle.reverse();
                return Some(cycle);
            }
            if members.contains(&w) && seen.insert(w) {
                parent[w] = Some(v);
                queue.push_back(w);
            }
        }
    }
    None
}

/// What a webhook trigger's filter keys and input mappings may name: a JSON pointer into the
/// payload (`/issue/title`), or `header:<name>` for a request header (lower-case name, e.g.
/// `header:x-github-event`; GitHub sends the event name only there).
fn is_webhook_key(key: &str) -> bool {
    match key.strip_prefix("header:") {
        Some(name) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        }
        None => key.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_elementary_cycle_once() {
        // 0 → 1 → 2 → 0 and 0 → 2 → 0 (2 depends on 0; 0 depends on 1 and 2; 1 depends on 2).
        let deps = vec![vec![1, 2], vec![2], vec![0], vec![]];
        let sccs = strongly_connected(&deps);
        assert_eq!(sccs, vec![vec![0, 1, 2], vec![3]]);
        let members: HashSet<usize> = [0, 1, 2].into();
        let cycles = elementary_cycles(&deps, &sccs[0], &members);
        assert_eq!(cycles, vec![vec![0, 1, 2], vec![0, 2]]);
        assert_eq!(shortest_cycle(&deps, 0, &members, 4), Some(vec![0, 2]));
    }

    #[test]
    fn dense_graphs_stay_bounded() {
        // Every step depends on every other: a huge number of cycles, reported briefly.
        let n = 60;
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| (0..n).filter(|&j| j != i).collect())
            .collect();
        let members: HashSet<usize> = (0..n).collect();
        let all: Vec<usize> = (0..n).collect();
        let cycles = elementary_cycles(&deps, &all, &members);
        assert!(!cycles.is_empty() && cycles.len() <= MAX_CYCLES_PER_GROUP + 1);
    }
}
