// The Flowgate dashboard: runs, a run's steps and approvals, workflows, analytics.
//
// A client of the documented HTTP API and nothing else: every number and every action goes
// through /v1/... with the x-api-key header, so the dashboard can do exactly what the key may.
// The key lives in sessionStorage (this tab, until it closes). Pages are hash routes
// (#/runs, #/runs/<id>, #/workflows, #/workflows/<id>, #/analytics) that refresh on a timer.

import {h, badge, time, clock, duration, money, percent, table, replaceChildren} from './dom.js';
import {drawGraph, describeGraph} from './graph.js';
import {barChart, columnChart} from './charts.js';

const KEY_STORAGE = 'flowgate.apiKey';
const RUN_STATUSES = ['pending', 'running', 'cancelling', 'compensating', 'succeeded', 'failed', 'cancelled', 'timed_out'];
const ACTIVE = new Set(['pending', 'running', 'cancelling', 'compensating']);
const RUNS_REFRESH_MS = 3000;
const RUN_REFRESH_MS = 1500;
const ANALYTICS_REFRESH_MS = 10000;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------
// The API
// ------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e ? `${e.message} (${status} ${e.code})` : `The API answered ${status}`);
    this.status = status;
    this.code = e ? e.code : null;
    this.problems = (e && e.problems) || [];
  }
}

let apiKey = sessionStorage.getItem(KEY_STORAGE);
let me = null;

/** Call the API with the key. A 401 while signed in signs out: the key stopped working. */
async function call(method, path, body, contentType) {
  const headers = {'x-api-key': apiKey || '', accept: 'application/json'};
  let payload;
  if (typeof body === 'string') {
    headers['content-type'] = contentType || 'application/yaml';
    payload = body;
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, {method, headers, body: payload, cache: 'no-store', credentials: 'omit'});
  } catch (e) {
    throw new ApiError(0, {error: {code: 'network', message: `The API could not be reached (${e.message})`}});
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const error = new ApiError(res.status, data);
    if (res.status === 401 && me) signOut(`Signed out: ${error.message}`);
    throw error;
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}

// ------------------------------------------------------------------------------------------
// Signing in and out
// ------------------------------------------------------------------------------------------

function showApp() {
  $('sign-in').hidden = true;
  $('top').hidden = false;
  $('view').hidden = false;
  $('who').textContent = `Signed in as ${me.principal}${me.may_approve ? '' : ' (may not decide approvals)'}`;
  route(true);
}

function signOut(message) {
  apiKey = null;
  me = null;
  sessionStorage.removeItem(KEY_STORAGE);
  leavePage();
  $('view').replaceChildren();
  $('view').hidden = true;
  $('top').hidden = true;
  $('sign-in').hidden = false;
  $('key-error').textContent = message || '';
  $('api-key').value = '';
  $('api-key').focus();
}

async function signIn(key) {
  apiKey = key;
  try {
    me = await call('GET', '/v1/me');
  } catch (e) {
    apiKey = null;
    me = null;
    throw e;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  showApp();
}

// The form stays hidden until this script runs: without it, submitting would put the key in
// the address (a plain GET form).
$('key-form').hidden = false;
$('key-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const key = $('api-key').value.trim();
  $('key-error').textContent = '';
  if (!key) {
    $('key-error').textContent = 'Enter an API key.';
    $('api-key').focus();
    return;
  }
  $('sign-in-button').disabled = true;
  try {
    await signIn(key);
  } catch (e) {
    $('key-error').textContent = e.status === 401 ? 'That API key was refused (401). Check it and try again.' : e.message;
    $('api-key').focus();
  } finally {
    $('sign-in-button').disabled = false;
  }
});

$('sign-out').addEventListener('click', () => signOut('Signed out.'));

// The skip link moves focus without touching the hash (the hash is the page's route).
$('skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  const heading = document.querySelector('#view:not([hidden]) h1');
  (heading || $('main')).focus();
});

// ------------------------------------------------------------------------------------------
// Pages: routing and refresh timers
// ------------------------------------------------------------------------------------------

let generation = 0;
let timer = null;

function leavePage() {
  generation += 1;
  if (timer) clearTimeout(timer);
  timer = null;
}

/** Call `load` now and then every `ms` until the page is left; errors show in `problem`. */
function refreshEvery(ms, load, problem) {
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    try {
      await load();
      if (problem) problem.textContent = '';
    } catch (e) {
      if (mine === generation && problem && e.status !== 401) problem.textContent = e.message;
    }
    if (mine === generation && me) timer = setTimeout(tick, typeof ms === 'function' ? ms() : ms);
  };
  return tick();
}

/** Whether the page that started some work is still the one showing. */
function current(mine) {
  return mine === generation;
}

function route(focusHeading) {
  if (!me) return;
  leavePage();
  const hash = location.hash && location.hash.startsWith('#/') ? location.hash : '#/runs';
  const [path, search] = hash.slice(1).split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(search || '');
  const view = $('view');
  view.replaceChildren();
  const section = parts[0] || 'runs';
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.getAttribute('data-nav') === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (section === 'runs' && parts[1]) runPage(view, parts[1]);
  else if (section === 'workflows' && parts[1]) workflowPage(view, parts[1]);
  else if (section === 'workflows') workflowsPage(view);
  else if (section === 'analytics') analyticsPage(view, params);
  else runsPage(view);
  if (focusHeading !== false) {
    const heading = view.querySelector('h1');
    if (heading) heading.focus();
  }
}

window.addEventListener('hashchange', () => route(true));

function heading(text) {
  document.title = `${text} · Flowgate`;
  return h('h1', {tabindex: '-1'}, text);
}

function field(id, labelText, control, help) {
  control.id = id;
  return h('div', {}, h('label', {for: id}, labelText), control, help ? h('span', {class: 'help'}, help) : null);
}

function select(options, value) {
  return h('select', {}, options.map(([v, text]) => h('option', {value: v, selected: v === value}, text)));
}

// ------------------------------------------------------------------------------------------
// Runs
// ------------------------------------------------------------------------------------------

/** Kept across visits, so coming back to the list keeps its filters. */
const runFilter = {workflow: '', statuses: [], from: '', to: '', sort: 'started_at', order: 'desc', limit: '20'};

function localInputToMs(value) {
  if (!value) return '';
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? '' : ms;
}

function runDuration(run, now) {
  if (run.duration_ms !== undefined && run.duration_ms !== null) return duration(run.duration_ms);
  if (ACTIVE.has(run.status)) return `${duration(now - (run.started_at || run.created_at))} so far`;
  return '—';
}

function runsPage(view) {
  const mine = generation;
  const problem = h('p', {class: 'error', role: 'alert'});
  const updated = h('p', {class: 'status-line'});
  const results = h('div', {});
  const pager = h('div', {class: 'pager'});
  const cursors = [];
  let cursor = null;

  const workflowSelect = select([['', 'All workflows']], runFilter.workflow);
  const statusBoxes = RUN_STATUSES.map((st) => {
    const box = h('input', {type: 'checkbox', value: st, checked: runFilter.statuses.includes(st)});
    return {st, box, label: h('label', {class: 'inline'}, box, st.replace('_', ' '))};
  });
  const from = h('input', {type: 'datetime-local', value: runFilter.from});
  const to = h('input', {type: 'datetime-local', value: runFilter.to});
  const sort = select([['started_at', 'Started'], ['completed_at', 'Completed'], ['duration', 'Duration'], ['cost', 'Cost']], runFilter.sort);
  const order = select([['desc', 'Newest / largest first'], ['asc', 'Oldest / smallest first']], runFilter.order);
  const limit = select([['20', '20'], ['50', '50'], ['100', '100']], runFilter.limit);

  const form = h('form', {class: 'panel', role: 'search', 'aria-label': 'Filter runs'},
    h('div', {class: 'row'},
      field('filter-workflow', 'Workflow', workflowSelect),
      h('fieldset', {}, h('legend', {}, 'Status'), h('div', {class: 'checks'}, statusBoxes.map((b) => b.label))),
      field('filter-from', 'Created from', from),
      field('filter-to', 'Created before', to),
      field('filter-sort', 'Sort by', sort),
      field('filter-order', 'Order', order),
      field('filter-limit', 'Per page', limit),
      h('div', {}, h('button', {type: 'submit'}, 'Apply'))));

  const readFilter = () => {
    runFilter.workflow = workflowSelect.value;
    runFilter.statuses = statusBoxes.filter((b) => b.box.checked).map((b) => b.st);
    runFilter.from = from.value;
    runFilter.to = to.value;
    runFilter.sort = sort.value;
    runFilter.order = order.value;
    runFilter.limit = limit.value;
  };
  const restart = () => {
    readFilter();
    cursors.length = 0;
    cursor = null;
    load().catch((e) => { problem.textContent = e.message; });
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); restart(); });
  form.addEventListener('change', restart);

  let shown = '';
  async function load() {
    const list = await call('GET', `/v1/runs${query({
      workflow: runFilter.workflow,
      status: runFilter.statuses.join(','),
      from: localInputToMs(runFilter.from),
      to: localInputToMs(runFilter.to),
      sort: runFilter.sort,
      order: runFilter.order,
      limit: runFilter.limit,
      cursor,
    })}`);
    if (!current(mine)) return;
    const now = Date.now();
    updated.textContent = `Updated ${clock(now)}; refreshes every ${RUNS_REFRESH_MS / 1000} s.`;
    const signature = JSON.stringify(list) + (list.runs.some((r) => ACTIVE.has(r.status)) ? now : '');
    if (signature === shown) return;
    shown = signature;
    const rows = list.runs.map((run) => h('tr', {'data-run': run.id},
      h('td', {}, h('a', {href: `#/runs/${encodeURIComponent(run.id)}`, 'data-key': `run:${run.id}`}, run.id)),
      h('td', {}, run.workflow_id),
      h('td', {}, badge(run.status)),
      h('td', {}, time(run.started_at || run.created_at)),
      h('td', {class: 'num'}, runDuration(run, now)),
      h('td', {class: 'num'}, money(run.cost_usd)),
      h('td', {}, run.started_by || '—')));
    replaceChildren(results, list.runs.length
      ? table('Runs', ['Run', 'Workflow', 'Status', 'Started', {label: 'Duration', num: true}, {label: 'Cost', num: true}, 'Started by'], rows, {captionHidden: true})
      : h('p', {class: 'empty'}, 'No runs match these filters.'));
    const newer = h('button', {type: 'button', class: 'secondary', 'data-key': 'newer', disabled: cursors.length === 0}, 'Newer page');
    const older = h('button', {type: 'button', class: 'secondary', 'data-key': 'older', disabled: !list.next_cursor}, 'Older page');
    newer.addEventListener('click', () => { cursor = cursors.pop() || null; shown = ''; load().catch((e) => { problem.textContent = e.message; }); });
    older.addEventListener('click', () => { cursors.push(cursor); cursor = list.next_cursor; shown = ''; load().catch((e) => { problem.textContent = e.message; }); });
    replaceChildren(pager, newer, older);
  }

  view.append(heading('Runs'), h('p', {class: 'help'}, 'Every run, newest first; start one from ', h('a', {href: '#/workflows'}, 'a workflow'), '.'), form, problem, updated, results, pager);

  call('GET', '/v1/workflows').then((list) => {
    if (!current(mine)) return;
    for (const w of list.workflows) workflowSelect.append(h('option', {value: w.id, selected: w.id === runFilter.workflow}, w.id));
  }).catch(() => {});
  refreshEvery(RUNS_REFRESH_MS, load, problem);
}

// ------------------------------------------------------------------------------------------
// One run
// ------------------------------------------------------------------------------------------

/** The line under a step's name in the graph: its status, and turns for an agent step. */
function stepLine(step) {
  const parts = [step.status.replace('_', ' ')];
  if (step.agent) {
    parts.push(step.agent.max_turns ? `${step.agent.turns}/${step.agent.max_turns} turns` : `${step.agent.turns} turns`);
  }
  return parts.join(' · ');
}

function progressCell(step) {
  const a = step.agent;
  if (!a) return step.kind === 'agent' ? h('span', {class: 'help'}, 'not started') : '—';
  const label = a.max_turns ? `${step.id}: ${a.turns} of ${a.max_turns} turns` : `${step.id}: ${a.turns} turns`;
  const bar = a.max_turns
    ? h('progress', {max: a.max_turns, value: Math.min(a.turns, a.max_turns), 'aria-label': label, 'data-step': step.id})
    : h('progress', {'aria-label': label, 'data-step': step.id});
  return h('span', {}, bar, h('span', {class: 'progress-text'}, a.max_turns ? `${a.turns} / ${a.max_turns} turns` : `${a.turns} turns`),
    a.phase ? h('span', {class: 'help'}, ` · ${a.phase}`) : null);
}

function timelineClass(kind) {
  if (/fail|reject|timed_out|expired|cancel/.test(kind)) return 't-bad';
  if (/succeed|approv|complet/.test(kind)) return 't-ok';
  if (/approval\.requested|waiting|queued/.test(kind)) return 't-wait';
  return null;
}

function runPage(view, id) {
  const mine = generation;
  const problem = h('p', {class: 'error', role: 'alert'});
  const notice = h('p', {class: 'notice', role: 'status'});
  const badgeSlot = h('span', {});
  const updated = h('p', {class: 'status-line'});
  const facts = h('div', {});
  const approvals = h('div', {});
  const graphBox = h('div', {class: 'graph-wrap'});
  const stepsBox = h('div', {});
  const timeline = h('ol', {class: 'timeline'});
  let run = null;
  let lastSeq = null;

  // Feedback to the running agent step.
  const feedbackStep = select([['', 'The running agent step']], '');
  const feedbackText = h('textarea', {rows: 4, required: true});
  const feedbackType = select([['user', 'user'], ['system', 'system']], 'user');
  const feedbackSend = h('button', {type: 'submit'}, 'Send feedback');
  const feedbackForm = h('form', {'aria-labelledby': 'feedback-title'},
    h('div', {class: 'row'},
      field('feedback-step', 'Step', feedbackStep),
      field('feedback-type', 'Speaks as', feedbackType)),
    field('feedback-text', 'Message for the agent', feedbackText),
    h('p', {}, feedbackSend));
  feedbackForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!feedbackText.value.trim()) { problem.textContent = 'Write a message for the agent first.'; feedbackText.focus(); return; }
    await command('messages', {content: feedbackText.value, type: feedbackType.value, step: feedbackStep.value || undefined}, 'Feedback sent to the agent.');
    feedbackText.value = '';
  });

  // Run actions.
  const cancelReason = h('input', {type: 'text'});
  const cancelForce = h('input', {type: 'checkbox', id: 'cancel-force'});
  const cancelButton = h('button', {type: 'submit', class: 'danger'}, 'Cancel run');
  const cancelForm = h('form', {'aria-label': 'Cancel the run'}, h('h3', {}, 'Cancel'),
    field('cancel-reason', 'Reason (optional)', cancelReason),
    h('label', {class: 'inline', for: 'cancel-force'}, cancelForce, 'Kill agent runs at once (force)'),
    h('div', {}, cancelButton));
  cancelForm.addEventListener('submit', (e) => {
    e.preventDefault();
    command('cancel', {reason: cancelReason.value.trim() || undefined, force: cancelForce.checked}, 'Cancellation recorded.');
  });
  const retryFrom = select([['', 'The failed steps']], '');
  const retryButton = h('button', {type: 'submit'}, 'Retry run');
  const retryForm = h('form', {'aria-label': 'Retry the run'}, h('h3', {}, 'Retry'),
    field('retry-from', 'Resume from', retryFrom), h('div', {}, retryButton));
  retryForm.addEventListener('submit', (e) => {
    e.preventDefault();
    command('retry', {from_step: retryFrom.value || undefined}, 'Retry recorded.');
  });
  const rollbackReason = h('input', {type: 'text'});
  const rollbackButton = h('button', {type: 'submit', class: 'secondary'}, 'Roll back');
  const rollbackForm = h('form', {'aria-label': 'Roll the run back'}, h('h3', {}, 'Roll back'),
    field('rollback-reason', 'Reason (optional)', rollbackReason),
    h('span', {class: 'help'}, 'Runs the compensations of finished steps, newest first.'),
    h('div', {}, rollbackButton));
  rollbackForm.addEventListener('submit', (e) => {
    e.preventDefault();
    command('rollback', {reason: rollbackReason.value.trim() || undefined}, 'Rollback recorded.');
  });

  async function command(what, body, done) {
    problem.textContent = '';
    notice.textContent = '';
    try {
      await call('POST', `/v1/runs/${encodeURIComponent(id)}/${what}`, body);
      notice.textContent = done;
      await load();
    } catch (e) {
      problem.textContent = e.message;
    }
  }

  const approvalCards = new Map();
  function approvalCard(a) {
    const errors = h('p', {class: 'error', role: 'alert'});
    const reason = h('input', {type: 'text', id: `reason-${a.id}`});
    const feedback = h('input', {type: 'text', id: `feedback-${a.id}`});
    const mayNot = !me.may_approve;
    const approve = h('button', {type: 'button', class: 'approve', 'data-key': `approve:${a.id}`, 'data-action': 'approve', disabled: mayNot}, 'Approve');
    const reject = h('button', {type: 'button', class: 'danger', 'data-key': `reject:${a.id}`, 'data-action': 'reject', disabled: mayNot}, 'Reject');
    const retry = h('button', {type: 'button', 'data-key': `retry:${a.id}`, 'data-action': 'retry', disabled: mayNot}, 'Retry with feedback');
    const decide = async (decision, comment, button) => {
      errors.textContent = '';
      if ((decision === 'reject' || decision === 'retry') && !comment) {
        errors.textContent = decision === 'reject' ? 'Give a reason for rejecting.' : 'Write the feedback the agent should get.';
        (decision === 'reject' ? reason : feedback).focus();
        return;
      }
      button.disabled = true;
      try {
        const answer = await call('POST', `/v1/approvals/${encodeURIComponent(a.id)}/decision`, {decision, comment: comment || undefined});
        notice.textContent = `Recorded: ${decision} on ${a.step || 'the budget'} by ${answer.by}.`;
        await load();
      } catch (e) {
        errors.textContent = e.message;
        button.disabled = false;
      }
    };
    approve.addEventListener('click', () => decide('approve', null, approve));
    reject.addEventListener('click', () => decide('reject', reason.value.trim(), reject));
    retry.addEventListener('click', () => decide('retry', feedback.value.trim(), retry));
    const title = a.kind === 'budget' ? `Continue past the budget${a.step ? ` of ${a.step}` : ''}?` : `Approval: ${a.step}`;
    return h('div', {class: 'approval', 'data-approval': a.id},
      h('h3', {}, title),
      h('p', {class: 'help'}, `Requested ${time(a.requested_at)}`,
        a.approvers.length ? ` · approvers: ${a.approvers.join(', ')}` : ' · anyone with access may decide',
        a.required > 1 ? ` · ${a.required} approvals needed (${a.decisions.length} so far)` : '',
        a.expires_at ? ` · expires ${time(a.expires_at)}` : ''),
      h('pre', {tabindex: '0', 'aria-label': 'The approval message'}, a.message),
      mayNot ? h('p', {class: 'help'}, 'Your API key may not decide approvals.') : null,
      h('div', {class: 'decision-grid'},
        h('div', {}, approve),
        h('div', {}, h('label', {for: reason.id}, 'Reason for rejecting'), reason, reject),
        h('div', {}, h('label', {for: feedback.id}, 'Feedback for the agent (it runs again)'), feedback, retry)),
      errors);
  }

  function renderApprovals(open) {
    const ids = new Set(open.map((a) => a.id));
    for (const [aid, card] of approvalCards) {
      if (!ids.has(aid)) { card.remove(); approvalCards.delete(aid); }
    }
    for (const a of open) {
      if (!approvalCards.has(a.id)) {
        const card = approvalCard(a);
        approvalCards.set(a.id, card);
        approvals.append(card);
      }
    }
    const empty = approvals.querySelector('.empty');
    if (open.length && empty) empty.remove();
    if (!open.length && !empty) approvals.append(h('p', {class: 'empty'}, 'Nothing is waiting for a decision.'));
  }

  function syncOptions(sel, wanted) {
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (JSON.stringify(have) === JSON.stringify(wanted)) return;
    const keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    for (const v of wanted) sel.append(h('option', {value: v}, v));
    sel.value = wanted.includes(keep) ? keep : '';
  }

  let shownSteps = '';
  function render(r) {
    const now = Date.now();
    updated.textContent = `Updated ${clock(now)}${ACTIVE.has(r.status) ? `; refreshes every ${RUN_REFRESH_MS / 1000} s` : ''}.`;
    replaceChildren(badgeSlot, badge(r.status));
    replaceChildren(facts, h('dl', {class: 'facts'},
      [['Workflow', h('a', {href: `#/workflows/${encodeURIComponent(r.workflow_id)}`, 'data-key': 'facts:workflow'}, `${r.workflow_id} (version ${r.workflow_version})`)],
        ['Status', r.status.replace('_', ' ')],
        ['Created', time(r.created_at)],
        ['Started', time(r.started_at)],
        ['Completed', time(r.completed_at)],
        ['Duration', runDuration(r, now)],
        ['Cost', money(r.cost_usd)],
        ['Started by', r.started_by || '—'],
        r.session_name ? ['Session', r.session_name] : null,
        r.parent_run_id ? ['Started by run', h('a', {href: `#/runs/${encodeURIComponent(r.parent_run_id)}`, 'data-key': 'facts:parent'}, r.parent_run_id)] : null,
        r.error ? ['Error', h('span', {class: 'error'}, r.error)] : null,
      ].filter(Boolean).map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))));
    renderApprovals(r.open_approvals);

    const signature = JSON.stringify(r.steps);
    if (signature !== shownSteps) {
      shownSteps = signature;
      const pictured = r.steps.map((st) => ({
        id: st.id,
        depends_on: st.depends_on,
        cls: `n-${st.status}`,
        line: stepLine(st),
        progress: st.agent && st.agent.max_turns ? st.agent.turns / st.agent.max_turns : null,
      }));
      replaceChildren(graphBox, drawGraph(pictured,
        `Step graph of run ${r.id}: ${describeGraph(r.steps, (st) => stepLine(st))}`));
      replaceChildren(stepsBox, table('Steps', ['Step', 'Kind', 'Status', {label: 'Attempt', num: true}, 'Progress', {label: 'Duration', num: true}, {label: 'Cost', num: true}],
        r.steps.map((st) => h('tr', {'data-step': st.id},
          h('th', {scope: 'row'}, st.id),
          h('td', {}, st.kind, st.agent && st.agent.workflow ? h('span', {class: 'help'}, ` (${st.agent.workflow})`) : null),
          h('td', {}, badge(st.status), st.error ? h('div', {class: 'error'}, st.error) : null),
          h('td', {class: 'num'}, st.attempt),
          h('td', {}, progressCell(st)),
          h('td', {class: 'num'}, duration(st.duration_ms)),
          h('td', {class: 'num'}, st.agent ? money(st.agent.cost_usd) : '—'))), {captionHidden: true, scroll: true}));
    }
    syncOptions(feedbackStep, r.steps.filter((st) => st.kind === 'agent' && st.status === 'running').map((st) => st.id));
    syncOptions(retryFrom, r.steps.map((st) => st.id));
    const active = ACTIVE.has(r.status);
    feedbackSend.disabled = !r.steps.some((st) => st.kind === 'agent' && st.status === 'running');
    cancelButton.disabled = !active;
    retryButton.disabled = !['failed', 'cancelled', 'timed_out'].includes(r.status);
    rollbackButton.disabled = active;
  }

  async function loadEvents() {
    for (;;) {
      const page = await call('GET', `/v1/runs/${encodeURIComponent(id)}/events${query({after: lastSeq, limit: 1000})}`);
      if (!current(mine)) return;
      for (const e of page.events) {
        lastSeq = e.seq;
        timeline.append(h('li', {class: timelineClass(e.kind), 'data-kind': e.kind},
          h('div', {class: 't-head'}, h('time', {datetime: new Date(e.at).toISOString()}, time(e.at)), ' · ',
            h('span', {class: 't-kind'}, e.kind), ' · ', e.actor,
            e.step_id ? ` · ${e.step_id}${e.attempt ? ` (attempt ${e.attempt})` : ''}` : ''),
          h('p', {class: 't-msg'}, e.message)));
      }
      if (page.next_after === undefined || page.next_after === null) return;
    }
  }

  async function load() {
    const r = await call('GET', `/v1/runs/${encodeURIComponent(id)}`);
    if (!current(mine)) return;
    run = r;
    render(r);
    await loadEvents();
  }

  view.append(
    h('div', {class: 'title-row'}, heading(`Run ${id}`), badgeSlot),
    updated, problem, notice,
    h('section', {class: 'panel', 'aria-labelledby': 'run-facts'}, h('h2', {id: 'run-facts', class: 'visually-hidden'}, 'Summary'), facts),
    h('section', {class: 'panel', 'aria-labelledby': 'run-approvals'}, h('h2', {id: 'run-approvals'}, 'Waiting for a decision'), approvals),
    h('section', {class: 'panel', 'aria-labelledby': 'run-steps'}, h('h2', {id: 'run-steps'}, 'Steps'),
      graphBox,
      h('ul', {class: 'legend', 'aria-label': 'Step colours'}, [['succeeded', 'succeeded'], ['running', 'running'], ['waiting', 'waiting'], ['failed', 'failed / timed out'], ['pending', 'pending'], ['cancelled', 'cancelled / skipped']]
        .map(([cls, text]) => h('li', {}, h('span', {class: `swatch sw-${cls}`, 'aria-hidden': 'true'}), text))),
      stepsBox),
    h('section', {class: 'panel', 'aria-labelledby': 'feedback-title'}, h('h2', {id: 'feedback-title'}, 'Send feedback to a running agent step'), feedbackForm),
    h('section', {class: 'panel', 'aria-labelledby': 'run-actions'}, h('h2', {id: 'run-actions'}, 'Run actions'),
      h('div', {class: 'actions'}, cancelForm, retryForm, rollbackForm)),
    h('section', {class: 'panel', 'aria-labelledby': 'run-audit'}, h('h2', {id: 'run-audit'}, 'Audit log'),
      h('div', {class: 'timeline-wrap', tabindex: '0', role: 'region', 'aria-label': 'Audit log entries, oldest first'}, timeline)));

  refreshEvery(() => (run && !ACTIVE.has(run.status) ? RUN_REFRESH_MS * 4 : RUN_REFRESH_MS), load, problem);
}

// ------------------------------------------------------------------------------------------
// Workflows
// ------------------------------------------------------------------------------------------

function validateBox() {
  const text = h('textarea', {class: 'code definition', rows: 12, spellcheck: 'false', 'aria-describedby': 'validate-help validate-result'});
  const strict = h('input', {type: 'checkbox', id: 'validate-strict'});
  const result = h('div', {id: 'validate-result', role: 'status', 'aria-live': 'polite'});
  const form = h('form', {},
    field('validate-text', 'Definition (YAML or JSON)', text),
    h('p', {id: 'validate-help', class: 'help'}, 'Checked by the API (POST /v1/workflows/validate); nothing is stored.'),
    h('p', {}, h('label', {class: 'inline', for: 'validate-strict'}, strict, 'Also check agent workflow names with the agent service (strict)')),
    h('p', {}, h('button', {type: 'submit'}, 'Validate')),
    result);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    result.replaceChildren(h('p', {class: 'help'}, 'Checking…'));
    const body = text.value;
    const type = body.trim().startsWith('{') ? 'application/json' : 'application/yaml';
    try {
      const report = await call('POST', `/v1/workflows/validate${strict.checked ? '?strict=true' : ''}`, body, type);
      text.setAttribute('aria-invalid', report.valid ? 'false' : 'true');
      result.replaceChildren(report.valid
        ? h('p', {class: 'notice'}, 'Valid: no problems found.')
        : h('div', {}, h('p', {class: 'error'}, `${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}:`),
          h('ul', {class: 'problems'}, report.problems.map((p) => h('li', {}, p.path ? h('code', {}, p.path) : null, p.path ? ': ' : '', p.message)))));
    } catch (err) {
      text.setAttribute('aria-invalid', 'true');
      result.replaceChildren(h('p', {class: 'error'}, err.message));
    }
  });
  return form;
}

function workflowsPage(view) {
  const mine = generation;
  const problem = h('p', {class: 'error', role: 'alert'});
  const list = h('div', {}, h('p', {class: 'help'}, 'Loading…'));
  view.append(heading('Workflows'), problem,
    h('section', {class: 'panel', 'aria-labelledby': 'wf-stored'}, h('h2', {id: 'wf-stored'}, 'Stored workflows'), list),
    h('section', {class: 'panel', 'aria-labelledby': 'wf-validate'}, h('h2', {id: 'wf-validate'}, 'Validate a definition'), validateBox()));
  call('GET', '/v1/workflows').then((answer) => {
    if (!current(mine)) return;
    list.replaceChildren(answer.workflows.length
      ? table('Stored workflows', ['Workflow', 'Name', {label: 'Version', num: true}, {label: 'Steps', num: true}, 'Stored', 'Description'],
        answer.workflows.map((w) => h('tr', {},
          h('td', {}, h('a', {href: `#/workflows/${encodeURIComponent(w.id)}`}, w.id)),
          h('td', {}, w.name || '—'),
          h('td', {class: 'num'}, w.version),
          h('td', {class: 'num'}, w.steps),
          h('td', {}, time(w.created_at)),
          h('td', {}, w.description || ''))), {captionHidden: true})
      : h('p', {class: 'empty'}, 'No workflows are stored yet: PUT one with the API or `flowgate workflows put <file>`.'));
  }).catch((e) => { problem.textContent = e.message; });
}

function stepDetail(st) {
  switch (st.kind) {
    case 'agent': return `agent workflow ${st.workflow}${st.max_turns ? `, at most ${st.max_turns} turns` : ''}`;
    case 'approval': return `${st.required || 1} of ${st.approvers && st.approvers.length ? st.approvers.join(', ') : 'anyone'}${st.expires_in ? `, expires in ${st.expires_in}` : ''}`;
    case 'wait': return `wait ${st.duration}`;
    case 'http': return `${st.method || 'GET'} ${st.url}`;
    case 'notify': return [st.slack_channel, st.webhook_url].filter(Boolean).join(', ') || 'notification';
    default: return '';
  }
}

function triggerItem(t) {
  const json = (v) => JSON.stringify(v);
  switch (t.type) {
    case 'schedule':
      return h('li', {}, h('strong', {}, 'Schedule '), h('code', {}, t.expression),
        ` (${t.timezone || 'UTC'}; overlap: ${t.overlap || 'skip'})`, t.inputs ? ` with inputs ${json(t.inputs)}` : '');
    case 'webhook':
      return h('li', {}, h('strong', {}, 'Webhook '), h('code', {}, `POST /hooks/${t.id}`),
        ` verified by ${t.verify || 'github'}`, t.filter ? `, when ${json(t.filter)}` : '', t.inputs ? `, inputs from ${json(t.inputs)}` : '');
    case 'workflow_completed':
      return h('li', {}, h('strong', {}, 'When '), h('code', {}, t.workflow), ' finishes',
        t.statuses && t.statuses.length ? ` (${t.statuses.join(', ')})` : '', t.inputs ? `, inputs ${json(t.inputs)}` : '');
    default:
      return h('li', {}, json(t));
  }
}

function inputControl(name, spec) {
  const id = `input-${name}`;
  const labelText = `${name}${spec.required ? ' (required)' : ''}`;
  const help = [spec.type, spec.description].filter(Boolean).join(': ');
  let control;
  let read;
  if (spec.type === 'boolean') {
    control = h('input', {type: 'checkbox', id, checked: spec.default === true});
    return {
      el: h('div', {}, h('label', {class: 'inline', for: id}, control, labelText), h('span', {class: 'help'}, help)),
      read: () => control.checked,
    };
  }
  if (spec.type === 'number' || spec.type === 'integer') {
    control = h('input', {type: 'number', step: spec.type === 'integer' ? '1' : 'any', value: spec.default ?? '', required: spec.required});
    read = () => (control.value === '' ? undefined : Number(control.value));
  } else if (spec.type === 'object' || spec.type === 'array') {
    control = h('textarea', {class: 'code', rows: 3, value: spec.default !== undefined ? JSON.stringify(spec.default) : '', required: spec.required});
    read = () => {
      if (!control.value.trim()) return undefined;
      try {
        return JSON.parse(control.value);
      } catch {
        throw new Error(`${name} must be JSON (${spec.type})`);
      }
    };
  } else {
    control = h('textarea', {rows: 2, value: spec.default ?? '', required: spec.required});
    read = () => (control.value === '' ? undefined : control.value);
  }
  return {el: field(id, labelText, control, help), read};
}

function workflowPage(view, id) {
  const mine = generation;
  const problem = h('p', {class: 'error', role: 'alert'});
  const body = h('div', {}, h('p', {class: 'help'}, 'Loading…'));
  const title = heading(`Workflow ${id}`);
  view.append(title, problem, body);
  Promise.all([
    call('GET', `/v1/workflows/${encodeURIComponent(id)}`),
    call('GET', `/v1/runs${query({workflow: id, limit: 10})}`),
  ]).then(([wf, runs]) => {
    if (!current(mine)) return;
    const def = wf.definition;
    title.textContent = def.name ? `${def.name} (${def.id})` : `Workflow ${def.id}`;
    document.title = `${title.textContent} · Flowgate`;
    const steps = def.steps.map((st) => ({
      id: st.id, depends_on: st.depends_on || [], cls: `k-${st.kind}`, line: `${st.kind}${st.name ? ` · ${st.name}` : ''}`, progress: null,
    }));
    const inputs = Object.entries(def.inputs || {}).map(([name, spec]) => ({name, ...inputControl(name, spec)}));
    const maxTurns = h('input', {type: 'number', min: '1', max: '200', step: '1'});
    const startError = h('p', {class: 'error', role: 'alert'});
    const start = h('form', {'aria-labelledby': 'wf-start'},
      inputs.map((i) => i.el),
      field('start-max-turns', 'Max turns per agent step (optional)', maxTurns),
      h('p', {}, h('button', {type: 'submit'}, 'Start run')), startError);
    start.addEventListener('submit', async (e) => {
      e.preventDefault();
      startError.textContent = '';
      try {
        const values = {};
        for (const i of inputs) {
          const v = i.read();
          if (v !== undefined) values[i.name] = v;
        }
        const started = await call('POST', '/v1/runs', {
          workflow: def.id, inputs: values, max_turns: maxTurns.value ? Number(maxTurns.value) : undefined,
        });
        location.hash = `#/runs/${encodeURIComponent(started.run_id)}`;
      } catch (err) {
        startError.textContent = err.message;
      }
    });
    body.replaceChildren(
      h('p', {}, `Version ${wf.version}, stored ${time(wf.created_at)}.`, def.description ? ` ${def.description}` : ''),
      h('section', {class: 'panel', 'aria-labelledby': 'wf-graph'}, h('h2', {id: 'wf-graph'}, 'Steps'),
        h('div', {class: 'graph-wrap'}, drawGraph(steps, `Step graph of workflow ${def.id}: ${describeGraph(def.steps, (st) => st.kind)}`)),
        h('ul', {class: 'legend', 'aria-label': 'Step colours'}, [['running', 'agent'], ['waiting', 'approval'], ['succeeded', 'notify / http'], ['cancelled', 'wait']]
          .map(([cls, text]) => h('li', {}, h('span', {class: `swatch sw-${cls}`, 'aria-hidden': 'true'}), text))),
        table('Steps', ['Step', 'Kind', 'Depends on', 'What it does'], def.steps.map((st) => h('tr', {},
          h('th', {scope: 'row'}, st.id), h('td', {}, st.kind), h('td', {}, (st.depends_on || []).join(', ') || '—'), h('td', {}, stepDetail(st)))), {captionHidden: true})),
      h('div', {class: 'two-col'},
        h('section', {class: 'panel', 'aria-labelledby': 'wf-triggers'}, h('h2', {id: 'wf-triggers'}, 'Schedules and triggers'),
          def.triggers && def.triggers.length
            ? h('ul', {}, def.triggers.map(triggerItem))
            : h('p', {class: 'empty'}, 'None: runs start from the API, the CLI, MCP or this page.')),
        h('section', {class: 'panel', 'aria-labelledby': 'wf-start'}, h('h2', {id: 'wf-start'}, 'Start a run'), start)),
      h('section', {class: 'panel', 'aria-labelledby': 'wf-runs'}, h('h2', {id: 'wf-runs'}, 'Recent runs'),
        runs.runs.length
          ? table('Recent runs', ['Run', 'Status', 'Started', {label: 'Duration', num: true}, {label: 'Cost', num: true}], runs.runs.map((r) => h('tr', {},
            h('td', {}, h('a', {href: `#/runs/${encodeURIComponent(r.id)}`}, r.id)), h('td', {}, badge(r.status)),
            h('td', {}, time(r.started_at || r.created_at)), h('td', {class: 'num'}, runDuration(r, Date.now())), h('td', {class: 'num'}, money(r.cost_usd)))), {captionHidden: true})
          : h('p', {class: 'empty'}, 'No runs yet.')));
  }).catch((e) => {
    if (current(mine)) body.replaceChildren(h('p', {class: 'error'}, e.message));
  });
}

// ------------------------------------------------------------------------------------------
// Analytics
// ------------------------------------------------------------------------------------------

const WINDOWS = [['1h', 'Last hour'], ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'], ['90d', 'Last 90 days']];
const analyticsFilter = {window: '24h', workflow: ''};

function tile(label, value, key) {
  return h('li', {class: 'tile', 'data-tile': key}, h('span', {class: 'label'}, label), h('span', {class: 'value'}, value));
}

function analyticsPage(view, params) {
  const mine = generation;
  if (params.get('window')) analyticsFilter.window = params.get('window');
  const problem = h('p', {class: 'error', role: 'alert'});
  const updated = h('p', {class: 'status-line'});
  const content = h('div', {});
  const windowSelect = select(WINDOWS, analyticsFilter.window);
  const workflowSelect = select([['', 'All workflows']], analyticsFilter.workflow);
  const form = h('form', {class: 'panel', 'aria-label': 'Analytics window'},
    h('div', {class: 'row'},
      field('an-window', 'Window', windowSelect),
      field('an-workflow', 'Workflow', workflowSelect),
      h('div', {}, h('button', {type: 'submit'}, 'Refresh'))));
  const reload = () => {
    analyticsFilter.window = windowSelect.value;
    analyticsFilter.workflow = workflowSelect.value;
    shown = '';
    load().catch((e) => { problem.textContent = e.message; });
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); reload(); });
  form.addEventListener('change', reload);

  let shown = '';
  async function load() {
    const a = await call('GET', `/v1/analytics${query({window: analyticsFilter.window, workflow: analyticsFilter.workflow})}`);
    if (!current(mine)) return;
    updated.textContent = `Computed ${time(a.to)} from ${a.runs_read} run${a.runs_read === 1 ? '' : 's'} created since ${time(a.from)}${a.truncated ? ' (only the newest 5,000: narrow the window)' : ''}; refreshes every ${ANALYTICS_REFRESH_MS / 1000} s.`;
    const signature = JSON.stringify({...a, to: 0, from: 0});
    if (signature === shown) return;
    shown = signature;
    const t = a.totals;
    const tick = a.series.bucket_ms < 86400000
      ? (ms) => clock(ms).slice(0, 5)
      : (ms) => { const d = new Date(ms); return `${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`; };
    const rows = a.workflows;
    const outcome = [
      {key: 'succeeded', name: 'succeeded', cls: 'succeeded'},
      {key: 'failed', name: 'failed / timed out', cls: 'failed'},
      {key: 'cancelled', name: 'cancelled', cls: 'cancelled'},
      {key: 'active', name: 'active', cls: 'active'},
    ];
    const pct = [{key: 'p50', name: 'p50', cls: 'p50'}, {key: 'p95', name: 'p95', cls: 'p95'}];
    replaceChildren(content,
      h('ul', {class: 'tiles', 'aria-label': 'Totals'},
        tile('Runs', String(t.runs), 'runs'),
        tile('Success rate', percent(t.success_rate), 'success'),
        tile('Duration p50', duration(t.duration_ms.p50), 'p50'),
        tile('Duration p95', duration(t.duration_ms.p95), 'p95'),
        tile('Agent turns', String(t.agent_turns), 'turns'),
        tile('Cost', money(t.cost_usd), 'cost'),
        tile('Approval wait p50', duration(t.approvals.wait_ms.p50), 'wait'),
        tile('Approvals pending', String(t.approvals.pending), 'pending')),
      h('div', {class: 'charts'},
        columnChart({
          title: 'Runs over time', series: outcome, tick,
          buckets: a.series.buckets.map((b) => ({start: b.start, succeeded: b.succeeded, failed: b.failed, cancelled: b.cancelled, active: b.active})),
        }),
        barChart({
          title: 'Runs per workflow, by outcome (success rate)', series: outcome, stacked: true,
          rows: rows.map((w) => ({
            label: w.workflow_id, note: `${w.runs} run${w.runs === 1 ? '' : 's'}, ${percent(w.success_rate)} succeeded`,
            values: {succeeded: w.succeeded, failed: w.failed + w.timed_out, cancelled: w.cancelled, active: w.active},
          })),
        }),
        barChart({
          title: 'Run duration p50 / p95', series: pct, format: duration,
          rows: rows.map((w) => ({label: w.workflow_id, values: {p50: w.duration_ms.p50, p95: w.duration_ms.p95}})),
        }),
        barChart({
          title: 'Approval wait p50 / p95', series: pct, format: duration,
          rows: rows.filter((w) => w.approvals.decided > 0 || w.approvals.pending > 0)
            .map((w) => ({label: w.workflow_id, values: {p50: w.approvals.wait_ms.p50, p95: w.approvals.wait_ms.p95}})),
        }),
        barChart({
          title: 'Agent turns', series: [{key: 'turns', name: 'turns', cls: 'turns'}],
          rows: rows.map((w) => ({label: w.workflow_id, values: {turns: w.agent_turns}})),
        }),
        barChart({
          title: 'Agent cost', series: [{key: 'cost', name: 'cost', cls: 'cost'}], format: money,
          rows: rows.map((w) => ({label: w.workflow_id, values: {cost: w.cost_usd}})),
        })),
      h('h2', {}, 'Per workflow'),
      rows.length
        ? table('Figures per workflow', ['Workflow', {label: 'Runs', num: true}, {label: 'Active', num: true}, {label: 'Succeeded', num: true}, {label: 'Failed', num: true},
          {label: 'Timed out', num: true}, {label: 'Cancelled', num: true}, {label: 'Success rate', num: true}, {label: 'Duration p50', num: true},
          {label: 'Duration p95', num: true}, {label: 'Agent turns', num: true}, {label: 'Cost', num: true}, {label: 'Cost per run', num: true},
          {label: 'Approvals decided', num: true}, {label: 'Approval wait p50', num: true}, {label: 'Approval wait p95', num: true}, {label: 'Approvals pending', num: true}],
          rows.map((w) => h('tr', {'data-workflow': w.workflow_id},
            h('th', {scope: 'row'}, w.workflow_id),
            [w.runs, w.active, w.succeeded, w.failed, w.timed_out, w.cancelled, percent(w.success_rate), duration(w.duration_ms.p50), duration(w.duration_ms.p95),
              w.agent_turns, money(w.cost_usd), money(w.cost_per_run_usd), w.approvals.decided, duration(w.approvals.wait_ms.p50),
              duration(w.approvals.wait_ms.p95), w.approvals.pending].map((v) => h('td', {class: 'num'}, v)))), {captionHidden: true, scroll: true})
        : h('p', {class: 'empty'}, 'No runs were created in this window.'));
  }

  view.append(heading('Analytics'), h('p', {class: 'help'}, 'Per workflow, over the runs created in the window (GET /v1/analytics).'), form, problem, updated, content);
  call('GET', '/v1/workflows').then((list) => {
    if (!current(mine)) return;
    for (const w of list.workflows) workflowSelect.append(h('option', {value: w.id, selected: w.id === analyticsFilter.workflow}, w.id));
  }).catch(() => {});
  refreshEvery(ANALYTICS_REFRESH_MS, load, problem);
}

// ------------------------------------------------------------------------------------------
// Start
// ------------------------------------------------------------------------------------------

if (apiKey) {
  signIn(apiKey).catch(() => signOut('Your saved key was refused; sign in again.'));
}
