#!/usr/bin/env bash
# Runs a command with the test profile's Kafka and Redis up, and stops them afterwards.
# Exits with the command's status; pytest's "no tests collected" (5) counts as a failure.
set -uo pipefail
PY=$1
export APIPLUS_PROFILE=test
"$PY" deploy/infra.py up --profile test || { "$PY" deploy/infra.py down --profile test; exit 1; }
eval "$("$PY" deploy/infra.py env --profile test | sed 's/^/export /')"
"$@"
status=$?
if [ "${APIPLUS_KEEP_INFRA:-0}" != "1" ]; then
  "$PY" deploy/infra.py down --profile test
fi
exit $status
