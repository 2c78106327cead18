"""What the local Lambda checks share (scripts/smoke_lambdas.py, scripts/coldstart.py): the AWS
resources of infra/template.yaml created on moto, the agent simulator, and each function's
environment as the template sets it, with local values.

The table is created from the template's own `Table` properties, so the smoke test also proves
that the deployed schema is the one the code works with.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"

# The test API key the events/ fixtures carry, and the secrets they are signed with.
TEST_API_KEY = "test-key-alice"
SLACK_TEST_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
HOOK_SECRETS = "gh-issues=flowgate-test-hook-secret"
SIMULATOR_KEY = "simulator-key"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) read as plain values."""


def _tagged(loader, _suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_CfnLoader.add_multi_constructor("!", _tagged)


@functools.cache
def template() -> dict:
    """infra/template.yaml, parsed once per process (callers only read it)."""
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until `url` answers HTTP at all (any status)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError as e:  # refused, reset: not up yet
            last = e
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s ({last})")


class Resources:
    """The template's table, work queue and schedule group, created on the emulator at
    `endpoint` under fresh names."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        suffix = uuid.uuid4().hex[:8]
        session = boto3.session.Session(
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
        )
        self.dynamodb = session.client("dynamodb", endpoint_url=endpoint)
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        self.scheduler = session.client("scheduler", endpoint_url=endpoint)
        resources = template()["Resources"]
        props = resources["Table"]["Properties"]
        self.table = f"flowgate-smoke-{suffix}"
        self.dynamodb.create_table(
            TableName=self.table,
            BillingMode=props["BillingMode"],
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
        )
        self.dynamodb.get_waiter("table_exists").wait(TableName=self.table)
        self.dynamodb.update_time_to_live(
            TableName=self.table,
            TimeToLiveSpecification=props["TimeToLiveSpecification"],
        )
        queue_props = resources["WorkQueue"]["Properties"]
        self.queue_url = self.sqs.create_queue(
            QueueName=f"flowgate-smoke-{suffix}",
            Attributes={"VisibilityTimeout": str(queue_props["VisibilityTimeout"])},
        )["QueueUrl"]
        self.schedule_group = f"flowgate-smoke-{suffix}"
        self.scheduler.create_schedule_group(Name=self.schedule_group)


def api_key_hashes() -> str:
    return "alice=" + hashlib.sha256(TEST_API_KEY.encode()).hexdigest()


def function_env(resources: Resources, agent_url: str, binary: str) -> dict[str, str]:
    """`binary`'s environment: the template's variable names (Globals plus the function's
    own) with local values. A name the template sets that this table has no value for is an
    error, so the smoke test breaks when the template grows a variable nobody gave a local
    value."""
    account = "123456789012"
    values = {
        "FLOWGATE_TABLE": resources.table,
        "FLOWGATE_QUEUE_URL": resources.queue_url,
        "FLOWGATE_AGENT_URL": agent_url,
        "FLOWGATE_AGENT_API_KEY": SIMULATOR_KEY,
        "FLOWGATE_SLACK_BOT_TOKEN": "",
        "FLOWGATE_SLACK_CHANNEL": "",
        "FLOWGATE_SLACK_API_URL": "http://127.0.0.1:9/api",
        "FLOWGATE_PUBLIC_URL": "https://abc123.execute-api.us-east-1.amazonaws.com",
        "FLOWGATE_APPROVAL_LINK_KEY": "smoke-approval-link-key-0123456789abcdef",
        "FLOWGATE_API_KEY_HASHES": api_key_hashes(),
        "FLOWGATE_API_KEY_APPROVERS": "",
        "FLOWGATE_SCHEDULE_GROUP": resources.schedule_group,
        "FLOWGATE_SCHEDULE_TARGET_ARN": f"arn:aws:lambda:us-east-1:{account}:function:flowgate-triggers",
        "FLOWGATE_SCHEDULE_ROLE_ARN": f"arn:aws:iam::{account}:role/flowgate-scheduler",
        "FLOWGATE_MCP_ALLOWED_HOSTS": "",
        "FLOWGATE_SLACK_SIGNING_SECRET": SLACK_TEST_SECRET,
        "FLOWGATE_APPROVAL_WEBHOOK_SECRETS": "",
        "FLOWGATE_APPROVAL_WEBHOOK_PRINCIPAL": "webhook",
        "FLOWGATE_HOOK_SECRETS": HOOK_SECRETS,
    }
    tpl = template()
    names = set(tpl["Globals"]["Function"]["Environment"]["Variables"])
    for resource in tpl["Resources"].values():
        binary_of = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        if binary_of == binary:
            names |= set(resource["Properties"].get("Environment", {}).get("Variables", {}))
            break
    else:
        raise SystemExit(f"no function in infra/template.yaml builds {binary}")
    missing = names - values.keys()
    if missing:
        raise SystemExit(f"no local value for {sorted(missing)} (add it to scripts/lambda_env.py)")
    return {name: values[name] for name in sorted(names)}


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def start_simulator(flowgate: Path, port: int, run_duration: str = "2s") -> subprocess.Popen:
    process = subprocess.Popen(
        [
            str(flowgate),
            "simulate-agent",
            "--addr",
            f"127.0.0.1:{port}",
            "--api-key",
            SIMULATOR_KEY,
            "--run-duration",
            run_duration,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/health")
    return process
