// End-to-end test of the Flowgate dashboard in headless Chromium, against `flowgate serve` with
// the built-in agent simulator. Run by scripts/browser-test, which starts the server and sets:
//
//   FLOWGATE_URL            the server (http://127.0.0.1:<port>)
//   FLOWGATE_DEV_KEY        the key of `dev`, who starts the run
//   FLOWGATE_APPROVER_KEY   the key of `U061F7AUR`, an approver of the example workflow
//   FLOWGATE_CHROMIUM       Debian's chromium (playwright-core drives it; nothing is downloaded)
//   FLOWGATE_EXAMPLE        examples/architect-implement-review.yaml
//   FLOWGATE_SCREENSHOTS    where run.png and analytics.png go (docs/screenshots)
//
// Every wait is on something real (a selector, a value, an API answer), never a fixed sleep.
// axe-core checks every page; any `serious` or `critical` violation fails the test.

import {chromium} from 'playwright-core';
import {readFile, mkdir, mkdtemp, rm} from 'node:fs/promises';
import {createRequire} from 'node:module';
import {tmpdir} from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this through scripts/browser-test`);
  return value;
};
const BASE = need('FLOWGATE_URL');
const DEV_KEY = need('FLOWGATE_DEV_KEY');
const APPROVER_KEY = need('FLOWGATE_APPROVER_KEY');
const CHROMIUM = process.env.FLOWGATE_CHROMIUM || '/usr/bin/chromium';
const EXAMPLE = need('FLOWGATE_EXAMPLE');
const SHOTS = need('FLOWGATE_SCREENSHOTS');
const WORKFLOW = 'architect-implement-review';
const APPROVER = 'U061F7AUR';
/** The whole run: four 6 s agent steps, their polling, one approval. */
const RUN_TIMEOUT = 150_000;

const started = Date.now();
const log = (...args) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s]`, ...args);

async function api(method, url, key, body, contentType) {
  const res = await fetch(BASE + url, {
    method,
    headers: {'x-api-key': key, ...(body ? {'content-type': contentType || 'application/json'} : {})},
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return {status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers};
}

// ------------------------------------------------------------------------------------------
// Checks used on every page
// ------------------------------------------------------------------------------------------

const axeSummary = [];

/** axe-core on the page as it is now: fail on any serious or critical violation. */
async function accessibility(page, name) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await page.addScriptTag({path: AXE});
  }
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, {resultTypes: ['violations']});
    return r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = result.filter((v) => !bad.includes(v)).map((v) => `${v.id} (${v.impact})`);
  axeSummary.push({page: name, serious: bad.length, other: minor});
  log(`axe on ${name}: ${bad.length} serious/critical, other: ${minor.join(', ') || 'none'}`);
  assert.equal(bad.length, 0, `axe found serious violations on ${name}:\n${JSON.stringify(bad, null, 2)}`);
}

/** Press Tab until `selector` has the focus (at most `max` presses): keyboard-only reach. */
async function tabTo(page, selector, max = 80) {
  for (let i = 0; i <= max; i++) {
    if (await page.evaluate((sel) => document.activeElement && document.activeElement.matches(sel), selector)) {
      return i;
    }
    await page.keyboard.press('Tab');
  }
  const at = await page.evaluate(() => document.activeElement && document.activeElement.outerHTML.slice(0, 120));
  throw new Error(`${selector} was not reached with ${max} Tab presses (focus is on ${at})`);
}

async function progressValue(page, step) {
  return page.evaluate((id) => {
    const bar = document.querySelector(`progress[data-step="${id}"]`);
    return bar ? {value: bar.value, max: bar.max} : null;
  }, step);
}

/** Start one-step agent runs through the API: one to succeed, one to fail, one to cancel. */
async function otherRuns() {
  const start = async (workflow, message) => {
    const answer = await api('POST', '/v1/runs', DEV_KEY, {workflow, message});
    assert.equal(answer.status, 202, JSON.stringify(answer.body));
    return answer.body.run_id;
  };
  const succeeded = await start('architect', 'Sketch a cache for the run list [turns=12]');
  const failed = await start('architect', 'Design the impossible [fail]');
  const cancelled = await start('review', 'Review everything, forever [timeout]');
  const cancel = await api('POST', `/v1/runs/${cancelled}/cancel`, DEV_KEY, {force: true, reason: 'not needed'});
  assert.equal(cancel.status, 202, JSON.stringify(cancel.body));
  return {succeeded, failed, cancelled};
}

/** Poll the API until each run has ended as its name says. */
async function untilFinished(runs) {
  const until = Date.now() + 60_000;
  for (;;) {
    const states = await Promise.all(Object.entries(runs).map(async ([want, id]) => [want, (await api('GET', `/v1/runs/${id}`, DEV_KEY)).body.status]));
    if (states.every(([want, got]) => want === got)) return;
    if (states.some(([want, got]) => got !== want && ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(got))) {
      throw new Error(`a run ended otherwise than expected: ${JSON.stringify(states)}`);
    }
    if (Date.now() > until) throw new Error(`runs did not finish: ${JSON.stringify(states)}`);
    await new Promise((resolve) => setTimeout(resolve, 250)); // the interval between polls
  }
}

// ------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------

async function main() {
  // The example workflow, stored through the API as a person would with `flowgate workflows put`.
  const stored = await api('PUT', `/v1/workflows/${WORKFLOW}`, DEV_KEY, await readFile(EXAMPLE, 'utf8'), 'application/yaml');
  assert.ok([200, 201].includes(stored.status), `storing the example: ${JSON.stringify(stored.body)}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a new, empty profile directory (--user-data-dir).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    await flow(browser);
    await policyHolds(browser);
  } finally {
    await browser.close();
  }
  log('axe summary:', JSON.stringify(axeSummary));
  log('PASS');
}

/** The person's path through the dashboard. */
async function flow(browser) {
  // axe is injected as a script tag, which the page's own policy would refuse; the policy is
  // checked on its own in policyHolds().
  const context = await browser.newContext({bypassCSP: true, viewport: {width: 1280, height: 900}});
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(20_000);

  // 1. Without a key: the prompt and nothing else.
  log('open the dashboard');
  await page.goto(`${BASE}/`);
  await page.locator('#key-form').waitFor();
  assert.equal(await page.locator('#top').isVisible(), false, 'no navigation before signing in');
  assert.equal(await page.locator('#view').isVisible(), false, 'no data before signing in');
  assert.equal(await page.locator('#view *').count(), 0);
  await accessibility(page, 'sign-in prompt');

  // 2. Keyboard only: a wrong key is refused, the right one signs in.
  const tabs = await tabTo(page, '#api-key', 5);
  log(`the key field is ${tabs} Tab press(es) from the top`);
  await page.keyboard.type('not-a-key');
  await page.keyboard.press('Enter');
  await page.locator('#key-error', {hasText: 'refused'}).waitFor();
  assert.equal(await page.locator('#view').isVisible(), false, 'a wrong key shows nothing');
  await page.locator('#api-key').fill('');
  await page.keyboard.type(DEV_KEY);
  await page.keyboard.press('Enter');
  await page.locator('h1', {hasText: 'Runs'}).waitFor();
  await page.locator('#who', {hasText: 'Signed in as dev'}).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('flowgate.apiKey')), DEV_KEY, 'the key is kept for the session');
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing is kept beyond the session');
  await page.locator('text=No runs match these filters.').waitFor();
  await accessibility(page, 'runs (empty)');

  // 3. Workflows: the list and the validate box with its errors inline.
  await page.getByRole('link', {name: 'Workflows'}).click();
  await page.locator(`a[href="#/workflows/${WORKFLOW}"]`).waitFor();
  await page.locator('#validate-text').fill('id: broken\nsteps:\n  - id: a\n    kind: wait\n    duration: 1s\n    depends_on: [tset]\n');
  await page.getByRole('button', {name: 'Validate'}).click();
  const problem = page.locator('#validate-result .problems li', {hasText: 'unknown step'});
  await problem.waitFor();
  assert.match(await problem.innerText(), /steps\[0\]\.depends_on/);
  assert.equal(await page.locator('#validate-text').getAttribute('aria-invalid'), 'true');
  await accessibility(page, 'workflows');

  // 4. The workflow: its graph, triggers, and the start form.
  await page.locator(`a[href="#/workflows/${WORKFLOW}"]`).click();
  await page.locator('svg.graph g.node[data-step="approve-design"]').waitFor();
  assert.equal(await page.locator('svg.graph g.node').count(), 5, 'five steps drawn');
  assert.equal(await page.locator('svg.graph path.edge').count(), 4, 'four dependency arrows');
  assert.equal(await page.locator('svg.graph path.edge[data-edge="architect->approve-design"]').count(), 1);
  await page.locator('h2', {hasText: 'Schedules and triggers'}).waitFor();
  await accessibility(page, 'workflow');
  // [turns=30] makes the simulated architect take 30 turns, so its progress bar has room to move.
  await page.locator('#input-issue').fill('Add a /healthz endpoint that reports the version [turns=30]');
  await page.locator('#input-repository_url').fill('https://git.example.com/acme/api.git');
  await page.getByRole('button', {name: 'Start run'}).click();
  await page.waitForURL(/#\/runs\/.+/);
  const runId = decodeURIComponent(page.url().split('#/runs/')[1]);
  log(`started run ${runId}`);
  // Meanwhile, through the API, one-step agent runs that end otherwise (for the runs list and
  // the analytics): one succeeds, one fails, one is cancelled.
  const others = await otherRuns();

  // 5. The run page: the architect's progress bar moves.
  const first = await page.waitForFunction(() => {
    const bar = document.querySelector('progress[data-step="architect"]');
    return bar && bar.value > 0 && bar.value < bar.max ? bar.value : null;
  }, null, {timeout: 30_000, polling: 100});
  const v1 = await first.jsonValue();
  assert.equal((await progressValue(page, 'architect')).max, 40, 'max_turns of the architect step');
  assert.match(await page.locator('svg.graph g.node[data-step="architect"]').getAttribute('class'), /n-running/);
  await accessibility(page, 'run (agent step running)');
  const second = await page.waitForFunction((before) => {
    const bar = document.querySelector('progress[data-step="architect"]');
    return bar && bar.value > before ? bar.value : null;
  }, v1, {timeout: 30_000, polling: 100});
  const v2 = await second.jsonValue();
  log(`the architect's progress bar moved from ${v1} to ${v2} of 40 turns`);
  assert.ok(v2 > v1);

  // 6. The approval: dev started the run and is not a listed approver, so the API refuses.
  const card = page.locator('.approval[data-approval]');
  await card.waitFor({timeout: 30_000});
  assert.match(await page.locator('svg.graph g.node[data-step="approve-design"]').getAttribute('class'), /n-waiting/);
  await accessibility(page, 'run (approval waiting)');
  await mkdir(SHOTS, {recursive: true});
  await page.screenshot({path: path.join(SHOTS, 'run-approval.png'), fullPage: true});
  await card.getByRole('button', {name: 'Approve'}).click();
  const refusal = card.locator('.error');
  await refusal.filter({hasText: '403'}).waitFor();
  log(`approving as dev is refused: ${await refusal.innerText()}`);
  // Rejecting needs a reason: the page says so without calling the API.
  await card.getByRole('button', {name: 'Reject'}).click();
  await refusal.filter({hasText: 'Give a reason'}).waitFor();
  const still = await api('GET', `/v1/runs/${runId}`, DEV_KEY);
  assert.equal(still.body.open_approvals.length, 1, 'the approval is still open');

  // 7. Sign out (the page keeps nothing), sign in as the approver with the keyboard alone,
  //    and approve with Tab and Enter.
  await page.locator('#sign-out').click();
  await page.locator('#key-form').waitFor();
  assert.equal(await page.locator('#view *').count(), 0, 'signing out removes the data');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('flowgate.apiKey')), null);
  await tabTo(page, '#api-key', 5);
  await page.keyboard.type(APPROVER_KEY);
  await page.keyboard.press('Enter');
  await page.locator('#who', {hasText: `Signed in as ${APPROVER}`}).waitFor();
  await card.waitFor();
  const presses = await tabTo(page, '.approval button[data-action="approve"]');
  log(`the Approve button is ${presses} Tab presses from the heading`);
  await page.keyboard.press('Enter');
  await page.locator('[role="status"]', {hasText: `approve on approve-design by ${APPROVER}`}).waitFor();

  // 8. The run completes.
  await page.locator('.title-row .badge', {hasText: 'succeeded'}).waitFor({timeout: RUN_TIMEOUT});
  for (const step of ['architect', 'approve-design', 'implement', 'test', 'review']) {
    assert.match(await page.locator(`svg.graph g.node[data-step="${step}"]`).getAttribute('class'), /n-succeeded/, step);
  }
  const done = await api('GET', `/v1/runs/${runId}`, DEV_KEY);
  assert.equal(done.body.status, 'succeeded');
  assert.equal(done.body.steps.find((s) => s.id === 'approve-design').approval.decisions[0].by, APPROVER);
  await page.locator('ol.timeline li[data-kind="run.completed"], ol.timeline li[data-kind="run.succeeded"]').first().waitFor();
  const entries = await page.locator('ol.timeline li').count();
  const audit = await api('GET', `/v1/runs/${runId}/events?limit=1000`, DEV_KEY);
  assert.equal(entries, audit.body.events.length, 'the timeline shows the whole audit log');
  await accessibility(page, 'run (succeeded)');
  await mkdir(SHOTS, {recursive: true});
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({path: path.join(SHOTS, 'run.png'), fullPage: true});
  log(`run page: ${entries} audit entries; screenshot saved`);

  // 9. Analytics: the page agrees with the API (once the other runs have ended too).
  await untilFinished(others);
  await page.getByRole('link', {name: 'Analytics'}).click();
  const row = page.locator(`tr[data-workflow="${WORKFLOW}"]`);
  await row.waitFor();
  const figures = await api('GET', '/v1/analytics?window=24h', DEV_KEY);
  assert.equal(figures.status, 200);
  const wf = figures.body.workflows.find((w) => w.workflow_id === WORKFLOW);
  assert.equal(wf.runs, 1);
  assert.equal(wf.succeeded, 1);
  assert.equal(wf.success_rate, 1);
  assert.equal(wf.approvals.decided, 1);
  assert.ok(wf.agent_turns >= 30 + 3 * 5, `agent turns ${wf.agent_turns}`);
  const totals = figures.body.totals;
  assert.equal(totals.runs, 4);
  assert.deepEqual([totals.succeeded, totals.failed, totals.cancelled], [2, 1, 1]);
  assert.equal(totals.success_rate, 0.5);
  await page.locator('[data-tile="runs"] .value', {hasText: String(totals.runs)}).waitFor();
  assert.equal(await page.locator('[data-tile="success"] .value').innerText(), '50%');
  assert.equal(await row.locator('td').nth(6).innerText(), '100%', 'the example workflow succeeded every time');
  assert.equal(await page.locator('figure.chart svg').count(), 6, 'six charts');
  assert.ok(await page.locator('figure.chart svg rect.c-succeeded').count() >= 2, 'bars drawn');
  await accessibility(page, 'analytics');
  await page.screenshot({path: path.join(SHOTS, 'analytics.png'), fullPage: true});
  log('analytics page matches GET /v1/analytics; screenshot saved');

  // 10. The runs list: the run is there, and the status filter works.
  await page.getByRole('link', {name: 'Runs'}).click();
  await page.locator(`tr[data-run="${runId}"] .badge`, {hasText: 'succeeded'}).waitFor();
  await page.locator('label', {hasText: /^failed$/}).locator('input').check();
  await page.locator(`tr[data-run="${others.failed}"]`).waitFor();
  await page.locator(`tr[data-run="${runId}"]`).waitFor({state: 'detached'});
  assert.equal(await page.locator('tr[data-run]').count(), 1, 'only the failed run is listed');
  await accessibility(page, 'runs (filtered)');

  assert.deepEqual(pageErrors, [], 'no script errors');
  await context.close();
}

/**
 * The same pages with their Content-Security-Policy enforced: they render, and the browser
 * reports no violation (no inline script or style, nothing loaded from elsewhere).
 */
async function policyHolds(browser) {
  const context = await browser.newContext({viewport: {width: 1280, height: 900}});
  const page = await context.newPage();
  const violations = [];
  const requests = [];
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text());
  });
  page.on('pageerror', (e) => violations.push(`script error: ${e.message}`));
  page.on('request', (r) => requests.push(r.url()));
  const response = await page.goto(`${BASE}/`);
  assert.match(response.headers()['content-security-policy'], /^default-src 'self'/);
  await tabTo(page, '#api-key', 5);
  await page.keyboard.type(APPROVER_KEY);
  await page.keyboard.press('Enter');
  await page.locator('h1', {hasText: 'Runs'}).waitFor();
  const runLink = page.locator('tr[data-run] a').first();
  await runLink.waitFor();
  await runLink.click();
  await page.locator('svg.graph g.node').first().waitFor();
  await page.locator('ol.timeline li').first().waitFor();
  await page.getByRole('link', {name: 'Workflows'}).click();
  await page.locator(`a[href="#/workflows/${WORKFLOW}"]`).click();
  await page.locator('svg.graph g.node').first().waitFor();
  await page.getByRole('link', {name: 'Analytics'}).click();
  await page.locator('figure.chart svg rect').first().waitFor();
  const outside = requests.filter((u) => !u.startsWith(BASE));
  assert.deepEqual(outside, [], 'nothing is fetched from outside');
  assert.deepEqual(violations, [], 'the policy is not violated');
  log(`policy enforced: ${requests.length} requests, all to ${BASE}, no violations`);
  await context.close();
}

const deadline = setTimeout(() => {
  console.error('the browser test did not finish in 280 s');
  process.exit(1);
}, 280_000);
deadline.unref();

main().then(() => process.exit(0), (e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
