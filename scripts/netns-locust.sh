#!/usr/bin/env bash
# A Locust master and its workers on stand-in hosts: one network namespace each, joined by a
# bridge (needs root and iproute2). Redis and the master listen on the master's address; each
# worker runs in its own working directory and reaches both over the bridge. The namespaces
# are deleted at the end, also on failure.
#
#   scripts/netns-locust.sh                                   # arrival, scripted, 2 workers, 10 s
#   scripts/netns-locust.sh --scenario producer --variant optimized --workers 3 --users 6
#   scripts/netns-locust.sh --keep /tmp/xhost                 # keep each role's directory
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m qbench.harness.load.crosshost "$@"
