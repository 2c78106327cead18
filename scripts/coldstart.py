#!/usr/bin/env python3
"""Measure each function's cold start locally, through the real Lambda runtime loop.

For every run, a fresh process of the function's binary is started against a minimal Lambda
Runtime API (the four HTTP calls lambda_runtime makes) served here, with the function's
environment from infra/template.yaml pointed at moto and the agent simulator. Measured:

- init: process start until the runtime's first `GET /invocation/next` (what Lambda reports
  as Init Duration: everything `main` does before the runtime loop);
- first: process start until the first invocation's response is posted;
- handler: the first invocation alone (`next` handed out until the response).

The AWS endpoint and the agent service are reached through counting TCP proxies, so the
report also says how many connections were opened during init and during the first
invocation: with connections warmed in init the second number is 0, i.e. no handshake (TLS on
AWS) sits on the first request's path.

Usage: coldstart.py --bin-dir DIR [--bare PATH] [--runs N] [--json OUT]
  DIR holds flowgate-api, flowgate-poller, flowgate-approvals, flowgate-triggers (release
  builds for this machine). --bare is a hello-world lambda_runtime function, the floor.
  Starts its own moto behind an HTTP/1.1 keep-alive proxy (moto's server closes every
  connection; AWS endpoints do not) and needs the flowgate CLI (for `flowgate simulate-agent`;
  --flowgate, default target/debug/flowgate). Run it with .venv/bin/python.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lambda_env  # noqa: E402

ROOT = lambda_env.ROOT

# The event each function's first invocation handles: one that touches its store.
EVENTS = {
    "flowgate-api": "events/api/list-runs.json",
    "flowgate-approvals": "events/approvals/list-pending.json",
    "flowgate-triggers": "events/triggers/sweep.json",
    "flowgate-poller": "events/poller/wake-unknown-run.json",
}


class CountingProxy:
    """A TCP proxy that timestamps every accepted connection."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.accepted: list[float] = []
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(time.perf_counter())
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def opened_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted if start <= t < end)


class KeepAliveProxy:
    """An HTTP/1.1 proxy with persistent client connections in front of moto (whose werkzeug
    server closes every connection, unlike AWS endpoints), counting the client connections it
    accepts. Each request is forwarded on a fresh upstream connection."""

    def __init__(self, target_port: int):
        self.accepted: list[float] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def setup(self):
                proxy.accepted.append(time.perf_counter())
                # Headers and body go out in separate writes: without this, Nagle's algorithm
                # and the client's delayed ACK add 40 ms to every answer.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                super().setup()

            def _forward(self):
                import http.client

                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def opened_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted if start <= t < end)


class RuntimeApi:
    """The Lambda Runtime API for one cold start: one event, then `next` blocks."""

    def __init__(self, event: bytes):
        self.event = event
        self.request_id = str(uuid.uuid4())
        self.first_next: float | None = None
        self.responded: float | None = None
        self.response: bytes | None = None
        self.error: bytes | None = None
        self.done = threading.Event()
        self.handed_out = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def _answer(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self._answer(404)
                now = time.perf_counter()
                if api.first_next is None:
                    api.first_next = now
                if api.handed_out:
                    api.done.wait(60)  # the measurement is over; the process is stopped
                    self.close_connection = True
                    return
                api.handed_out = True
                deadline = int(time.time() * 1000) + 30_000
                self._answer(
                    200,
                    api.event,
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": api.request_id,
                        "Lambda-Runtime-Deadline-Ms": str(deadline),
                        "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:coldstart",
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                    },
                )

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.endswith("/response"):
                    api.response = body
                else:
                    api.error = body
                api.responded = time.perf_counter()
                try:
                    self._answer(202, b"{}")
                finally:
                    api.done.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


def cold_start(binary: Path, env: dict, event: bytes, proxies: list[CountingProxy]) -> dict:
    runtime = RuntimeApi(event)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime.port}",
        "AWS_LAMBDA_FUNCTION_NAME": binary.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
        **env,
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(binary)], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        if not runtime.done.wait(30):
            raise SystemExit(f"{binary.name}: no response within 30 s")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        runtime.close()
    if runtime.error is not None or runtime.first_next is None:
        raise SystemExit(
            f"{binary.name} failed: {runtime.error!r}\n{stderr.decode(errors='replace')[-2000:]}"
        )
    phases = {}
    for line in stderr.decode(errors="replace").splitlines():
        try:
            fields = json.loads(line).get("fields", {})
        except (json.JSONDecodeError, AttributeError):
            continue
        if str(fields.get("message", "")).endswith("ready"):
            phases = {k: fields[k] for k in ("sdk_config_ms", "clients_ms", "warm_up_ms") if k in fields}
    return {
        **phases,
        "init_ms": (runtime.first_next - started) * 1000,
        "first_ms": (runtime.responded - started) * 1000,
        "handler_ms": (runtime.responded - runtime.first_next) * 1000,
        "connections_in_init": sum(p.opened_between(started, runtime.first_next) for p in proxies),
        "connections_in_first": sum(
            p.opened_between(runtime.first_next, runtime.responded) for p in proxies
        ),
        "response": runtime.response.decode(errors="replace")[:300],
    }


def summarize(samples: list[dict]) -> dict:
    def pct(key, q):
        values = sorted(s[key] for s in samples)
        return values[min(len(values) - 1, int(q * len(values)))]

    phases = {
        f"{k}_p50": round(statistics.median(s[k] for s in samples), 2)
        for k in ("sdk_config_ms", "clients_ms", "warm_up_ms")
        if all(k in s for s in samples)
    }
    return {
        **phases,
        "runs": len(samples),
        "init_p50_ms": round(statistics.median(s["init_ms"] for s in samples), 2),
        "init_p90_ms": round(pct("init_ms", 0.9), 2),
        "first_p50_ms": round(statistics.median(s["first_ms"] for s in samples), 2),
        "handler_p50_ms": round(statistics.median(s["handler_ms"] for s in samples), 2),
        "connections_in_init": max(s["connections_in_init"] for s in samples),
        "connections_in_first_max": max(s["connections_in_first"] for s in samples),
        "response": samples[0]["response"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True, type=Path)
    parser.add_argument("--bare", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--flowgate", type=Path, default=ROOT / "target" / "debug" / "flowgate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    moto_port = lambda_env.free_port()
    moto = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "moto_server.py"), "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{moto_port}"
    lambda_env.wait_http(f"{endpoint}/moto-api/data.json")
    aws_proxy = KeepAliveProxy(moto_port)
    resources = lambda_env.Resources(endpoint)
    sim_port = lambda_env.free_port()
    simulator = lambda_env.start_simulator(args.flowgate, sim_port)
    agent_proxy = CountingProxy("127.0.0.1", sim_port)
    proxied_endpoint = f"http://127.0.0.1:{aws_proxy.port}"
    results = {}
    try:
        targets = [(name, args.bin_dir / name) for name in EVENTS]
        if args.bare:
            targets.insert(0, ("bare", args.bare))
        for name, binary in targets:
            if name == "bare":
                env, event = {}, b'{"hello":"world"}'
            else:
                env = {
                    **lambda_env.aws_env(proxied_endpoint),
                    **lambda_env.function_env(
                        resources, f"http://127.0.0.1:{agent_proxy.port}", name
                    ),
                }
                event = (ROOT / EVENTS[name]).read_bytes()
            samples = [cold_start(binary, env, event, [aws_proxy, agent_proxy]) for _ in range(args.runs)]
            results[name] = summarize(samples)
            r = results[name]
            print(
                f"{name:<20} init p50 {r['init_p50_ms']:7.2f} ms (p90 {r['init_p90_ms']:7.2f})  "
                f"first answer p50 {r['first_p50_ms']:7.2f} ms  handler p50 {r['handler_p50_ms']:6.2f} ms  "
                f"connections: init {r['connections_in_init']}, first invocation {r['connections_in_first_max']}"
                + (
                    f"  [in init: SDK config {r['sdk_config_ms_p50']} ms, clients {r['clients_ms_p50']} ms, "
                    f"warm-up {r['warm_up_ms_p50']} ms]"
                    if "warm_up_ms_p50" in r
                    else ""
                ),
                flush=True,
            )
    finally:
        simulator.terminate()
        simulator.wait()
        moto.terminate()
        moto.wait()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
