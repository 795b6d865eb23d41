#!/usr/bin/env bash
# Run Molecule scenarios on Debian releases: each entry SCENARIO@RELEASE[+PROXY]
# is one tests/tools/run-scenario.sh run with MOLECULE_DISTRO=RELEASE (and
# MOLECULE_PROXY=PROXY when given, for the scenarios that read it). The image of
# each release the entries name is built (or found current) once, first; then
# the runs go in the order given, one at a time, or JOBS at a time, never two
# of one scenario at once (they would share Molecule's state of that scenario).
# Ends with a summary: each run's label, seconds and pass/fail; exits non-zero
# when any run failed.
#
#   bash tests/tools/run-matrix.sh default@trixie
#   bash tests/tools/run-matrix.sh default@bookworm default@trixie resilience@trixie+apache
#   JOBS=2 bash tests/tools/run-matrix.sh default@bookworm apache@trixie
#
# Each run's whole log: molecule/artifacts/<label>/molecule.log, label
# SCENARIO[-PROXY]-RELEASE. With JOBS above 1 the runs' lines interleave on the
# terminal, each prefixed with its label.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

JOBS=${JOBS:-1}

die() { echo "run-matrix: $*" >&2; exit 2; }

(($# > 0)) || die "usage: run-matrix.sh SCENARIO@RELEASE[+PROXY] ... (e.g. default@trixie cluster@bookworm+apache)"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "JOBS=$JOBS: not a number of runs at a time (1 or more)"

# --- the entries ----------------------------------------------------------------

scenarios=() releases=() proxies=() labels=()
for entry in "$@"; do
  [[ $entry =~ ^([a-z0-9-]+)@([a-z]+)(\+([a-z0-9]+))?$ ]] ||
    die "$entry: not SCENARIO@RELEASE[+PROXY] (e.g. default@trixie, resilience@bookworm+apache)"
  scenario=${BASH_REMATCH[1]} release=${BASH_REMATCH[2]} proxy=${BASH_REMATCH[4]}
  [[ -f molecule/$scenario/molecule.yml ]] || die "$entry: no scenario molecule/$scenario/"
  if [[ -n $proxy ]] && ! grep -q MOLECULE_PROXY "molecule/$scenario/molecule.yml"; then
    die "$entry: scenario $scenario does not read MOLECULE_PROXY; its proxy is its own"
  fi
  scenarios+=("$scenario") releases+=("$release") proxies+=("$proxy")
  labels+=("$scenario${proxy:+-$proxy}-$release")  # as run-scenario.sh names it
done

# --- the images, once each ------------------------------------------------------

for release in $(printf '%s\n' "${releases[@]}" | sort -u); do
  MOLECULE_DISTRO=$release bash molecule/image/build.sh ||
    die "no image for $release (molecule/image/build.sh failed); nothing run"
done

# --- the runs -------------------------------------------------------------------

results=$(mktemp -d)
# Each run in a process group of its own (job control), so that an interrupt
# stops the runs' whole trees (molecule, ansible, pytest), not only this script.
set -m
declare -A running=()  # pid -> entry index
stop_runs() {
  local pid
  for pid in "${!running[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  wait
  rm -rf "$results"
  exit 130
}
trap stop_runs INT TERM

# One entry: run-scenario.sh with exactly the entry's variables; then its exit
# status and seconds in $results/<index>. No input: a run in a background process
# group that read the terminal would be stopped.
run_entry() {
  local i=$1 start status
  start=$(date +%s)
  env -u MOLECULE_PROXY MOLECULE_DISTRO="${releases[i]}" ${proxies[i]:+"MOLECULE_PROXY=${proxies[i]}"} \
    bash tests/tools/run-scenario.sh "${scenarios[i]}" </dev/null 2>&1 |
    if ((JOBS > 1)); then sed -u "s/^/[${labels[i]}] /"; else cat; fi
  status=${PIPESTATUS[0]}
  echo "$status $(($(date +%s) - start))" >"$results/$i"
  return "$status"
}

# Starts the first waiting entry whose scenario is not running; false if none.
start_next() {
  local i pid
  for i in "${!waiting[@]}"; do
    [[ " ${running[*]} " == *" ${scenarios[waiting[i]]} "* ]] && continue
    run_entry "${waiting[i]}" &
    pid=$!
    running[$pid]=${scenarios[waiting[i]]}
    unset 'waiting[i]'
    return 0
  done
  return 1
}

start=$(date +%s)
waiting=("${!scenarios[@]}")
while ((${#waiting[@]} + ${#running[@]} > 0)); do
  while ((${#running[@]} < JOBS)) && start_next; do :; done
  wait -n -p pid
  unset 'running[$pid]'
done
set +m
trap - INT TERM

# --- the summary ----------------------------------------------------------------

failed=0
echo
echo "=== run-matrix: ${#labels[@]} runs, $(($(date +%s) - start))s, JOBS=$JOBS"
for i in "${!labels[@]}"; do
  read -r status seconds 2>/dev/null <"$results/$i" || status=1 seconds='?'
  if [[ $status == 0 ]]; then
    printf '  %-32s %6ss  pass\n' "${labels[i]}" "$seconds"
  else
    failed=$((failed + 1))
    printf '  %-32s %6ss  FAIL  (molecule/artifacts/%s/molecule.log)\n' "${labels[i]}" "$seconds" "${labels[i]}"
  fi
done
rm -rf "$results"
((failed == 0)) || { echo "=== run-matrix: $failed of ${#labels[@]} runs failed"; exit 1; }
