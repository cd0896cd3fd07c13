#!/usr/bin/env bash
# Run the test suite against a real MongoDB, so that every contract test runs on the server as
# well as on the embedded store (tests/conftest.py reads MONGODB_URI).
#
#   scripts/test_real_mongodb.sh [--image mongo:8] [--standalone] [--port 27017] [-- PYTEST_ARGS]
#   scripts/test_real_mongodb.sh --uri mongodb://host:27017/?replicaSet=rs0 [-- PYTEST_ARGS]
#   scripts/test_real_mongodb.sh [...] --exec -- COMMAND...   (COMMAND instead of pytest, e.g.
#                                  python -m benchmarks.run, with MONGODB_URI set the same way)
#
# Without --uri it needs docker: it starts the image on 127.0.0.1 as a single-node replica set
# (rs0, initiated here, so that retryable writes and transactions behave as in production) or,
# with --standalone, as a standalone server; waits for it; runs pytest; and removes the
# container however the run ends. With --uri it runs against that server, which must be
# disposable: the tests create and drop collections in its agent_datastore_tests database.
#
# PYTHON (default: .venv/bin/python if it exists, else python3) must have the package and its
# test extra installed, as the README's test command does. Exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."

image="mongo:8"
standalone=0
port=27017
uri=""
exec_command=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) image="$2"; shift 2 ;;
        --standalone) standalone=1; shift ;;
        --port) port="$2"; shift 2 ;;
        --uri) uri="$2"; shift 2 ;;
        --exec) exec_command=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# Waits until the server at $1 answers and, for a replica set, initiates it and waits until
# it has a primary. pymongo rather than a shell: mongo:4.4 ships `mongo`, later images
# `mongosh` only.
wait_for_server() {
    "$PYTHON" - "$1" "$standalone" "$port" <<'EOF'
import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

host, standalone, port = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
client: MongoClient = MongoClient(host, directConnection=True, serverSelectionTimeoutMS=2000)
deadline = time.monotonic() + 120
while True:
    try:
        client.admin.command("ping")
        break
    except PyMongoError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"MongoDB did not answer within 120 s: {exc}")
        time.sleep(1)
if not standalone:
    members = [{"_id": 0, "host": f"127.0.0.1:{port}"}]
    try:
        client.admin.command("replSetInitiate", {"_id": "rs0", "members": members})
    except OperationFailure as exc:
        if exc.code != 23:  # AlreadyInitialized: a server started with a config
            raise
    while not client.admin.command("hello").get("isWritablePrimary"):
        if time.monotonic() > deadline:
            sys.exit("the replica set elected no primary within 120 s")
        time.sleep(0.5)
info = client.server_info()
print(f"MongoDB {info['version']} ready at {host}", file=sys.stderr)
EOF
}

if [[ -z "$uri" ]]; then
    command -v docker >/dev/null || {
        echo "docker is not available: start a disposable MongoDB and pass --uri" >&2
        exit 2
    }
    name="agent-datastore-test-$$"
    # mongod listens on the same port inside and outside the container, so that the member
    # address in the replica set configuration works from both sides
    args=(--port "$port" --bind_ip_all)
    [[ "$standalone" == 1 ]] || args+=(--replSet rs0)
    docker run -d --rm --name "$name" -p "127.0.0.1:$port:$port" "$image" "${args[@]}" >/dev/null
    trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
    wait_for_server "mongodb://127.0.0.1:$port/"
    if [[ "$standalone" == 1 ]]; then
        uri="mongodb://127.0.0.1:$port/"
    else
        uri="mongodb://127.0.0.1:$port/?replicaSet=rs0"
    fi
fi

if [[ "$exec_command" == 1 ]]; then
    echo "running $* with MONGODB_URI=$uri" >&2
    MONGODB_URI="$uri" "$@"
else
    echo "running the suite with MONGODB_URI=$uri" >&2
    MONGODB_URI="$uri" "$PYTHON" -m pytest "$@"
fi
