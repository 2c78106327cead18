#!/usr/bin/env python3
"""Run moto's server (same command line as `moto_server`) with DynamoDB requests serialized.

Why: moto's server handles requests on threads, and its DynamoDB backend is not thread-safe.
TransactWriteItems snapshots every table it touches (copy.deepcopy) and restores that snapshot
when any condition fails, so two concurrent transactions on one table can undo each other's
committed writes, and a condition check can interleave with another request's write. Real
DynamoDB applies each conditional write atomically, and the contract suite's concurrency cases
(two puts from one version: exactly one wins; concurrent workflow puts never share a version)
test exactly that, so the emulator must not be racier than the service. Only DynamoDB requests
take the lock: SQS long polls stay concurrent.
"""

import threading

from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_DYNAMODB_LOCK = threading.Lock()
_dispatch = DomainDispatcherApplication.__call__


def _serialized(self, environ, start_response):
    # DynamoDB's JSON protocol names the operation in X-Amz-Target: DynamoDB_20120810.<Op>.
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        with _DYNAMODB_LOCK:
            return _dispatch(self, environ, start_response)
    return _dispatch(self, environ, start_response)


DomainDispatcherApplication.__call__ = _serialized

if __name__ == "__main__":
    server.main()
