#!/usr/bin/env bash
# Run one Molecule scenario: `molecule test -s NAME` on the release MOLECULE_DISTRO
# names (bookworm, the default, or trixie), its whole output kept in
# molecule/artifacts/LABEL/molecule.log, LABEL being NAME[-PROXY]-RELEASE (the
# checks keep their figures beside it: artifacts_dir() in
# molecule/common/deployment_checks.py). When it fails, the last lines
# printed name what failed (pytest's FAILED/ERROR lines and the assertion
# messages above them), since a CI log is often read from its tail only.
# The release's image must be there (molecule/image/build.sh;
# tests/tools/run-matrix.sh builds it first).
#
#   bash tests/tools/run-scenario.sh cluster
#   MOLECULE_DISTRO=trixie bash tests/tools/run-scenario.sh default
#   MOLECULE_PROXY=apache bash tests/tools/run-scenario.sh resilience
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

scenario=${1:?usage: run-scenario.sh SCENARIO}
# Molecule (the image in molecule.yml) and the checks (artifacts_dir()) read it too.
export MOLECULE_DISTRO=${MOLECULE_DISTRO:-bookworm}
label=$scenario${MOLECULE_PROXY:+-$MOLECULE_PROXY}-$MOLECULE_DISTRO
log=molecule/artifacts/$label/molecule.log
mkdir -p "$(dirname "$log")"

# Wide lines: Molecule's console wraps at $COLUMNS (80 when not a terminal), which
# would split pytest's "FAILED path::test" lines and the assertion messages.
# Each line to the terminal and the log; the start of each Molecule action (create,
# converge, verify...) also to $times, with the time, for the summary below.
times=$log.times
: > "$times"
shopt -s extglob
stamp() {
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ ${line//$'\e['*([0-9;])m/} =~ ➜\ ([a-z_]+):\ Executing[[:space:]]*$ ]]; then
      printf '%s %s\n' "$(date +%s)" "${BASH_REMATCH[1]}" >> "$times"
    fi
  done
}
start=$(date +%s)
COLUMNS=400 molecule test -s "$scenario" 2>&1 | stamp | tee "$log"
status=${PIPESTATUS[0]}
# Seconds per action, e.g. "converge 96s verify 212s": what a scenario costs, in CI's log.
printf '%s done\n' "$(date +%s)" >> "$times"
echo "=== molecule scenario '$label': $(( $(date +%s) - start ))s:" \
  "$(awk 'NR > 1 && prev != "" && $1 - t > 0 { printf "%s %ds  ", prev, $1 - t } { t = $1; prev = $2 }' "$times")"
rm -f "$times"
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
