#!/usr/bin/env python3
"""Smoke test of the four Lambda functions through the real Lambda runtime loop.

Starts `cargo lambda watch` (cargo-lambda's Lambda emulator, which runs each function's binary
under lambda_runtime), with every function's environment taken from infra/template.yaml and
pointed at moto (the template's table, queue and schedule group created there) and at the agent
simulator. Then invokes the functions with the events/ fixtures through `cargo lambda invoke`
and checks each answer, and drives one run to completion the way AWS would: start it through
the api function, then hand the work queue's messages to the poller as SQS batches until the
run succeeds.

Run by scripts/test (which starts moto and exports AWS_ENDPOINT_URL); alone:
  AWS_ENDPOINT_URL=http://127.0.0.1:PORT .venv/bin/python scripts/smoke_lambdas.py
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lambda_env  # noqa: E402

ROOT = lambda_env.ROOT
EVENTS = ROOT / "events"
FUNCTIONS = ["flowgate-api", "flowgate-poller", "flowgate-approvals", "flowgate-triggers"]

# The webhook-triggered workflow of events/triggers/github-*.json (see events/README.md).
ISSUE_AGENT = {
    "id": "issue-agent",
    "description": "An agent takes issues labeled agent",
    "inputs": {
        "title": {"type": "string", "required": True},
        "body": {"type": "string", "default": ""},
        "repository_url": {"type": "string", "required": True},
        "issue": {"type": "integer", "required": True},
    },
    "steps": [
        {
            "id": "fix",
            "kind": "agent",
            "workflow": "implement",
            "message": "Fix issue #${{ inputs.issue }}: ${{ inputs.title }}",
            "repository_url": "${{ inputs.repository_url }}",
        }
    ],
    "triggers": [
        {
            "type": "webhook",
            "id": "gh-issues",
            "verify": "github",
            "filter": {
                "header:x-github-event": "issues",
                "/action": "labeled",
                "/label/name": "agent",
            },
            "inputs": {
                "title": "/issue/title",
                "body": "/issue/body",
                "repository_url": "/repository/clone_url",
                "issue": "/issue/number",
            },
        }
    ],
}

checks_passed = 0


def fail(message: str) -> None:
    raise SystemExit(f"SMOKE FAILED: {message}")


def check(condition: bool, message: str) -> None:
    global checks_passed
    if not condition:
        fail(message)
    checks_passed += 1


class Watch:
    """`cargo lambda watch` on a free port, and `cargo lambda invoke` against it."""

    def __init__(self, env_file: Path, env: dict):
        self.port = lambda_env.free_port()
        self.env = env
        self.log = tempfile.NamedTemporaryFile(prefix="cargo-lambda-watch-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [
                "cargo", "lambda", "watch",
                "--invoke-port", str(self.port),
                "--invoke-address", "127.0.0.1",
                "--ignore-changes",
                "--env-file", str(env_file),
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                fail(f"cargo lambda watch exited ({self.process.returncode}):\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        fail(f"cargo lambda watch did not listen on {self.port}:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def invoke(self, function: str, event: dict) -> dict:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(event, f)
            path = f.name
        try:
            out = subprocess.run(
                [
                    "cargo", "lambda", "invoke", function,
                    "--invoke-port", str(self.port),
                    "--invoke-address", "127.0.0.1",
                    "--data-file", path,
                    "--output-format", "json",
                ],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,  # built beforehand: watch only checks fingerprints and starts it
            )
        finally:
            os.unlink(path)
        if out.returncode != 0:
            fail(f"cargo lambda invoke {function} failed:\n{out.stdout}\n{out.stderr}\nwatch log:\n{self.tail()}")
        return json.loads(out.stdout)

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def fixture(path: str, **placeholders: str) -> dict:
    text = (EVENTS / path).read_text()
    for name, value in placeholders.items():
        text = text.replace("{{" + name + "}}", value)
    return json.loads(text)


def body_of(answer: dict):
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    try:
        return json.loads(body) if body else None
    except json.JSONDecodeError:
        return body


def http(watch: Watch, function: str, event: dict, status: int, what: str):
    answer = watch.invoke(function, event)
    check(
        answer.get("statusCode") == status,
        f"{what}: expected HTTP {status}, got {answer.get('statusCode')}: {str(answer)[:600]}",
    )
    print(f"  ok  {function:<19} {what} -> {status}", flush=True)
    return body_of(answer)


def api_request(method: str, path: str, body=None, query: str = "") -> dict:
    """An API Gateway v2 event in the shape of events/api/*.json, with the test key."""
    event = fixture("api/healthz.json")
    event["rawPath"] = path
    event["rawQueryString"] = query
    event["routeKey"] = "$default"
    event["headers"] = {
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
        "x-api-key": lambda_env.TEST_API_KEY,
        "content-type": "application/json",
    }
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event.pop("cookies", None)
    if body is not None:
        event["body"] = json.dumps(body)
        event["isBase64Encoded"] = False
    return event


def slack_signed_now(template: dict) -> dict:
    """events/approvals/slack-block-actions.json re-signed with the test secret at the current
    time (the fixture's 2018 timestamp is outside the replay window)."""
    event = copy.deepcopy(template)
    raw = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"].encode()
    ts = str(int(time.time()))
    base = b"v0:" + ts.encode() + b":" + raw
    signature = "v0=" + hmac.new(lambda_env.SLACK_TEST_SECRET.encode(), base, hashlib.sha256).hexdigest()
    event["headers"]["x-slack-request-timestamp"] = ts
    event["headers"]["x-slack-signature"] = signature
    return event


def sqs_batch(messages: list[dict], queue_arn: str) -> dict:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", "0"),
                    "SenderId": "AROAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def drive_run(watch: Watch, resources: lambda_env.Resources, run_id: str, timeout: float = 90) -> dict:
    """Do what the SQS event source mapping does: receive the work queue's messages, invoke
    the poller with them as one batch, delete the ones it did not report as failed; until the
    run is finished."""
    queue_arn = resources.sqs.get_queue_attributes(
        QueueUrl=resources.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    deadline = time.monotonic() + timeout
    batches = 0
    while time.monotonic() < deadline:
        run = body_of(watch.invoke("flowgate-api", api_request("GET", f"/v1/runs/{run_id}")))
        if run.get("status") in ("succeeded", "failed", "cancelled", "timed_out"):
            return {"run": run, "batches": batches}
        got = resources.sqs.receive_message(
            QueueUrl=resources.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=2,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            continue
        answer = watch.invoke("flowgate-poller", sqs_batch(got, queue_arn))
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        batches += 1
        for m in got:
            if m["MessageId"] not in failed:
                resources.sqs.delete_message(QueueUrl=resources.queue_url, ReceiptHandle=m["ReceiptHandle"])
    fail(f"run {run_id} did not finish within {timeout:.0f} s")


def main() -> int:
    started = time.monotonic()
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        fail("AWS_ENDPOINT_URL is not set: run scripts/test, or start moto and export it")
    venv_bin = ROOT / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"}

    # `cargo lambda watch` starts a function with `cargo run --manifest-path Cargo.toml --bin
    # <function>` on its first invocation. Cargo resolves features per selected package, so one
    # combined build of all four does not produce the artifacts those commands want, and each
    # first invocation would compile the function (and the shared crates, with its feature set)
    # inside the invocation's timeout: on a slow CI machine that took more than 10 minutes.
    # Building each function with the same command line here, without a timeout, leaves watch
    # a fingerprint check.
    print("==> building the functions (as cargo lambda watch runs them) and the simulator (debug)", flush=True)
    for function in FUNCTIONS:
        step_started = time.monotonic()
        subprocess.run(["cargo", "build", "--quiet", "--manifest-path", "Cargo.toml", "--bin", function],
                       cwd=ROOT, env=env, check=True)
        print(f"    {function}: {time.monotonic() - step_started:.0f} s", flush=True)
    subprocess.run(["cargo", "build", "--quiet", "-p", "flowgate-cli", "--bin", "flowgate"], cwd=ROOT, env=env, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))

    resources = lambda_env.Resources(endpoint)
    sim_port = lambda_env.free_port()
    simulator = lambda_env.start_simulator(target / "debug" / "flowgate", sim_port, run_duration="1s")
    agent_url = f"http://127.0.0.1:{sim_port}"
    merged = {}
    for function in FUNCTIONS:
        merged.update(lambda_env.function_env(resources, agent_url, function))
    merged.update(lambda_env.aws_env(endpoint))
    merged["RUST_LOG"] = "warn"
    env_file = Path(tempfile.mkstemp(prefix="flowgate-smoke-", suffix=".env")[1])
    env_file.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in merged.items()))

    print(f"==> cargo lambda watch; moto at {endpoint}, simulator at {agent_url}", flush=True)
    watch = Watch(env_file, env)
    try:
        # --- api: the documented routes and their errors
        http(watch, "flowgate-api", fixture("api/healthz.json"), 200, "healthz.json")
        doc = http(watch, "flowgate-api", fixture("api/openapi.json"), 200, "openapi.json")
        check(doc.get("openapi", "").startswith("3.1"), f"OpenAPI document: {str(doc)[:200]}")
        http(watch, "flowgate-api", fixture("api/bad-missing-key.json"), 401, "bad-missing-key.json")
        http(watch, "flowgate-api", fixture("api/bad-malformed-json.json"), 400, "bad-malformed-json.json")
        http(watch, "flowgate-api", fixture("api/bad-unknown-route.json", run_id="nope"), 404, "bad-unknown-route.json")
        put = http(watch, "flowgate-api", fixture("api/put-workflow.json"), 201, "put-workflow.json (events-demo)")
        check(put.get("version") == 1, f"stored version: {put}")
        http(watch, "flowgate-api", fixture("api/agent-workflows.json"), 200, "agent-workflows.json (the simulator)")

        # --- a run, end to end: started by the api function, advanced by the poller
        start = fixture("api/start-run.json")
        start["body"] = json.dumps({"workflow": "events-demo", "inputs": {"task": "smoke"}})
        started_run = http(watch, "flowgate-api", start, 202, "start-run.json (events-demo)")
        run_id = started_run["run_id"]
        driven = drive_run(watch, resources, run_id)
        check(driven["run"]["status"] == "succeeded", f"run {run_id}: {driven['run']}")
        print(f"  ok  flowgate-poller     {driven['batches']} SQS batches took run {run_id} to succeeded", flush=True)
        got = http(watch, "flowgate-api", fixture("api/get-run.json", run_id=run_id), 200, "get-run.json")
        check(got["status"] == "succeeded", f"get-run: {got}")
        events = http(watch, "flowgate-api", fixture("api/run-events.json", run_id=run_id), 200, "run-events.json")
        check(len(events.get("entries", events.get("events", []))) == 2, f"run-events: {str(events)[:300]}")
        listed = http(watch, "flowgate-api", fixture("api/list-runs.json"), 200, "list-runs.json")
        check(isinstance(listed.get("runs"), list), f"list-runs: {str(listed)[:300]}")

        # --- MCP on the api function (the fixture's host is allowed through the env)
        mcp = fixture("mcp/tools-list.json")
        mcp["headers"]["host"] = "abc123.execute-api.us-east-1.amazonaws.com"
        tools = http(watch, "flowgate-api", mcp, 200, "mcp/tools-list.json")
        names = [t["name"] for t in tools["result"]["tools"]]
        check("run_workflow" in names, f"tools: {names}")

        # --- poller: batches with nothing to do and with undecodable bodies
        for name in ["wake-unknown-run.json", "batch-with-undecodable.json"]:
            answer = watch.invoke("flowgate-poller", fixture(f"poller/{name}"))
            check(answer.get("batchItemFailures") == [], f"poller {name}: {answer}")
            print(f"  ok  flowgate-poller     {name} -> no failed records (dropped, logged)", flush=True)

        # --- approvals
        pending = http(watch, "flowgate-approvals", fixture("approvals/list-pending.json"), 200, "list-pending.json")
        check(isinstance(pending.get("approvals", pending), list), f"pending: {str(pending)[:300]}")
        slack = fixture("approvals/slack-block-actions.json")
        http(watch, "flowgate-approvals", slack_signed_now(slack), 200, "slack-block-actions.json (signed now)")
        http(watch, "flowgate-approvals", slack, 401, "slack-block-actions.json as recorded (2018: stale)")
        http(watch, "flowgate-approvals", fixture("approvals/slack-bad-signature.json"), 401, "slack-bad-signature.json")

        # --- triggers: the sweep, a schedule, GitHub deliveries
        for name in ["sweep.json", "eventbridge-scheduled-event.json"]:
            report = watch.invoke("flowgate-triggers", fixture(f"triggers/{name}"))
            check("woken" in report and "schedules_fixed" in report, f"{name}: {report}")
            print(f"  ok  flowgate-triggers   {name} -> sweep report {report}", flush=True)
        scheduled = watch.invoke("flowgate-triggers", fixture("triggers/schedule-nightly.json"))
        check(scheduled.get("outcome") not in (None, "started"), f"schedule of a missing workflow: {scheduled}")
        print(f"  ok  flowgate-triggers   schedule-nightly.json (no such workflow) -> {scheduled.get('outcome')}", flush=True)
        http(watch, "flowgate-api", api_request("PUT", "/v1/workflows/issue-agent", ISSUE_AGENT), 201, "PUT issue-agent")
        hooked = http(watch, "flowgate-triggers", fixture("triggers/github-issues-labeled.json"), 202, "github-issues-labeled.json")
        check("run_id" in hooked, f"labeled: {hooked}")
        again = http(watch, "flowgate-triggers", fixture("triggers/github-issues-labeled.json"), 202, "github-issues-labeled.json again")
        check(again.get("duplicate") is True and again.get("run_id") == hooked["run_id"], f"again: {again}")
        ignored = http(watch, "flowgate-triggers", fixture("triggers/github-issues-opened.json"), 202, "github-issues-opened.json")
        check("ignored" in ignored, f"opened: {ignored}")
        http(watch, "flowgate-triggers", fixture("triggers/github-bad-signature.json"), 401, "github-bad-signature.json")
    finally:
        watch.stop()
        simulator.terminate()
        simulator.wait()
        env_file.unlink(missing_ok=True)
    print(f"smoke: {checks_passed} checks passed through cargo lambda invoke ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
