"""A real MCP client (the Python `mcp` SDK) driving Flowgate's MCP servers.

`cli/tests/mcp_clients.rs` runs this against `flowgate serve` (with the built-in agent
simulator): over stdio through `flowgate mcp`, and over Streamable HTTP against `/mcp`. It
prints one JSON object on stdout (what it saw) and exits 0, or prints the failure and exits 1;
the Rust test asserts on the JSON. Every MCP call is bounded (`read_timeout_seconds`, and
`anyio.fail_after` around each scenario) so a server that does not answer fails the test instead
of hanging it.

    python mcp_client.py SCENARIO --transport stdio|http --url API_URL --key KEY
                         [--bin FLOWGATE] [--mode auto|legacy] [--timeout SECONDS]

Scenarios:
  tools    list the tools (and the negotiated protocol version)
  full     tools, run_workflow with a progress token (waits for the run), get_workflow_status,
           a second (slow) run: send_feedback once its agent is running, kill_workflow, and a
           tool error for an unknown run
  bad-key  connect with a wrong key and report the error the client gets
"""

import argparse
import json
import sys
import time
import traceback

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

# Each MCP request; the scenario as a whole gets --timeout.
READ_TIMEOUT = 30.0


def target(args, key):
    """The SDK's transport for --transport, with `key` as the API key."""
    if args.transport == "stdio":
        return StdioServerParameters(
            command=args.bin,
            args=["mcp"],
            env={
                "FLOWGATE_URL": args.url,
                "FLOWGATE_API_KEY": key,
                "RUST_LOG": "warn",
                # No key file fallback: the key is the one given.
                "FLOWGATE_DATA_DIR": "/nonexistent-flowgate-data-dir",
            },
        )
    http = httpx2.AsyncClient(headers={"x-api-key": key}, timeout=READ_TIMEOUT)
    return streamable_http_client(args.url.rstrip("/") + "/mcp", http_client=http)


def tool_dump(tool):
    return tool.model_dump(by_alias=True, exclude_none=True, mode="json")


def text_of(result):
    return "\n".join(block.text for block in result.content if getattr(block, "text", None))


def result_dump(result):
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": text_of(result),
    }


async def connect_info(client):
    info = client.server_info
    return {
        "protocol_version": client.protocol_version,
        "server_name": info.name if info else None,
        "instructions": client.instructions,
    }


async def scenario_tools(args):
    async with Client(target(args, args.key), mode=args.mode, read_timeout_seconds=READ_TIMEOUT) as client:
        out = await connect_info(client)
        out["tools"] = [tool_dump(t) for t in (await client.list_tools()).tools]
        return out


async def wait_for(client, run_id, predicate, what, deadline_s=60.0):
    """Reads the run with get_workflow_status until `predicate(structured)` holds."""
    until = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < until:
        result = await client.call_tool("get_workflow_status", {"run_id": run_id, "detailed": True})
        if result.is_error:
            raise AssertionError(f"get_workflow_status failed while waiting for {what}: {text_of(result)}")
        last = result.structured_content
        if predicate(last):
            return last
        await anyio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last state: {json.dumps(last)}")


def agent_running(state):
    return any(
        step.get("status") == "running" and (step.get("agent") or {}).get("agent_run_id")
        for step in state["steps"]
    )


async def scenario_full(args):
    out = {}
    async with Client(target(args, args.key), mode=args.mode, read_timeout_seconds=READ_TIMEOUT) as client:
        out.update(await connect_info(client))
        out["tools"] = [tool_dump(t) for t in (await client.list_tools()).tools]

        # run_workflow with a progress token: waits (at most 20 s) for a short simulator run.
        progress = []

        async def on_progress(value, total, message):
            progress.append({"progress": value, "total": total, "message": message})

        started = time.monotonic()
        result = await client.call_tool(
            "run_workflow",
            {"workflow_name": "architect", "message": "Design a rate limiter [turns=4]", "wait_seconds": 20},
            progress_callback=on_progress,
        )
        out["run"] = result_dump(result)
        out["run_seconds"] = time.monotonic() - started
        out["progress"] = progress
        if result.is_error:
            return out
        run_id = result.structured_content["run_id"]

        t0 = time.monotonic()
        status = await client.call_tool("get_workflow_status", {"run_id": run_id, "detailed": True})
        out["status_ms"] = (time.monotonic() - t0) * 1000
        out["status"] = result_dump(status)

        # A slow run: feedback once its agent runs, then kill it.
        slow = await client.call_tool(
            "run_workflow", {"workflow_name": "implement", "message": "Build it [slow]"}
        )
        out["slow_run"] = result_dump(slow)
        slow_id = slow.structured_content["run_id"]
        await wait_for(client, slow_id, agent_running, "the slow run's agent to start")
        out["feedback"] = result_dump(
            await client.call_tool(
                "send_feedback", {"run_id": slow_id, "message": "Please add tests", "message_type": "user"}
            )
        )
        out["kill"] = result_dump(
            await client.call_tool("kill_workflow", {"run_id": slow_id, "force": True, "reason": "test"})
        )
        killed = await wait_for(client, slow_id, lambda s: s["finished"], "the killed run to end")
        out["killed_status"] = killed["status"]
        out["killed_events"] = [e["kind"] for e in killed["details"]["recent_events"]]

        out["unknown_run"] = result_dump(await client.call_tool("get_workflow_status", {"run_id": "no-such-run"}))
        out["recent"] = result_dump(await client.call_tool("list_recent_runs", {"page_size": 5}))
        out["workflows"] = result_dump(await client.call_tool("list_workflows", {}))
        out["approvals"] = result_dump(await client.call_tool("list_pending_approvals", {}))
        out["sessions"] = result_dump(await client.call_tool("list_sessions", {"active_only": False}))
        out["bad_args"] = result_dump(await client.call_tool("kill_workflow", {"run": slow_id}))
    return out


async def scenario_bad_key(args):
    started = time.monotonic()
    out = {}
    try:
        async with Client(
            target(args, "not-the-key"), mode=args.mode, read_timeout_seconds=READ_TIMEOUT
        ) as client:
            out["connected"] = True
            result = await client.call_tool("list_recent_runs", {})
            out["call"] = result_dump(result)
    except Exception as e:  # the error the client shows its user is what we assert on
        leaf = innermost(e)
        out["connected"] = out.get("connected", False)
        out["error_type"] = type(leaf).__name__
        out["error"] = str(leaf) or repr(leaf)
    out["seconds"] = time.monotonic() - started
    return out


def innermost(error):
    """The first leaf of an exception group (anyio task groups wrap what the client raised)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


SCENARIOS = {"tools": scenario_tools, "full": scenario_full, "bad-key": scenario_bad_key}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--transport", choices=["stdio", "http"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--bin")
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    async def run():
        with anyio.fail_after(args.timeout):
            return await SCENARIOS[args.scenario](args)

    try:
        out = anyio.run(run)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
