#!/usr/bin/env bash
# Runs a command with a profile's Kafka and Redis up (APIPLUS_PROFILE: test by default, or bench),
# and stops them afterwards. Exits with the command's status.
set -uo pipefail
PY=$1
PROFILE=${APIPLUS_PROFILE:-test}
export APIPLUS_PROFILE=$PROFILE
"$PY" deploy/infra.py up --profile "$PROFILE" || { "$PY" deploy/infra.py down --profile "$PROFILE"; exit 1; }
eval "$("$PY" deploy/infra.py env --profile "$PROFILE" | sed 's/^/export /')"
"$@"
status=$?
if [ "${APIPLUS_KEEP_INFRA:-0}" != "1" ]; then
  "$PY" deploy/infra.py down --profile "$PROFILE"
fi
exit $status
