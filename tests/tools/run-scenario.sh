#!/usr/bin/env bash
# Run one Molecule scenario: `molecule test -s NAME`, its whole output kept in
# molecule/artifacts/NAME[-PROXY]/molecule.log. When it fails, the last lines
# printed name what failed (pytest's FAILED/ERROR lines and the assertion
# messages above them), since a CI log is often read from its tail only.
#
#   bash tests/tools/run-scenario.sh cluster
#   MOLECULE_PROXY=apache bash tests/tools/run-scenario.sh resilience
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

scenario=${1:?usage: run-scenario.sh SCENARIO}
label=$scenario${MOLECULE_PROXY:+-$MOLECULE_PROXY}
log=molecule/artifacts/$label/molecule.log
mkdir -p "$(dirname "$log")"

# Wide lines: Molecule's console wraps at $COLUMNS (80 when not a terminal), which
# would split pytest's "FAILED path::test" lines and the assertion messages.
COLUMNS=400 molecule test -s "$scenario" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo
  echo "=== molecule scenario '$label' failed (exit $status); whole log: $log"
  # Colour codes off; then Ansible's failed tasks (the TASK line before each "fatal:"),
  # pytest's assertion lines ("E   ..."), and last pytest's summary of what failed.
  sed -E 's/\x1b\[[0-9;]*m//g; s/^ *│ ?//' "$log" > "$log.plain"
  grep -E -B3 '^fatal: ' "$log.plain" | grep -E '^(fatal: |TASK \[)' | tail -n 10
  grep -E '^E   ' "$log.plain" | cut -c1-400 | tail -n 30
  grep -E '^(FAILED|ERROR) ' "$log.plain" | cut -c1-400 | tail -n 20
  rm -f "$log.plain"
fi
exit "$status"
