#!/usr/bin/env bash
# Writes every lock in app/locks/ (`make lock` runs it with the controller venv's uv):
#
#   py<X.Y>.txt  the app's runtime dependencies (app/pyproject.toml [project] dependencies)
#                for targets whose python3 is X.Y: exact versions, wheels only, the sha256
#                of every file of each version. The signaling_app role builds each release's
#                wheelhouse from it with `pip download --require-hashes --no-deps`.
#   build.txt    the app's build backend (pyproject.toml [build-system] requires), which
#                builds the app's own wheel on the controller.
#
# Pins already in a lock are kept unless pyproject.toml no longer allows them; arguments
# go to every `uv pip compile`: `--upgrade` (everything to the newest allowed) or
# `--upgrade-package aiohttp`. Needs PyPI.
#
# A lock is resolved for the Python that the Debian release ships (its micro version
# matters: redis needs async-timeout only below 3.11.3) on every machine below; the
# resolutions must agree, so one file serves all of them. A new target Python is one
# more line in `targets` and one more `make lock`.
set -euo pipefail
uv=${UV:-uv}
case $uv in */*) uv=$(realpath "$uv") ;; esac
cd "$(dirname "$0")"

# "<python3 version> <glibc version>" of each Debian release we deploy to.
targets=(
  "3.11.2 2.36"   # Debian 12 (bookworm)
  "3.13.5 2.41"   # Debian 13 (trixie)
)
# Machines every lock covers, as wheel tags and `uname -m` spell them.
arches=(x86_64 aarch64)
# The newest glibc this uv resolves for (`--python-platform <arch>-manylinux_2_<N>`; uv 0.13
# stops at 2.40). A target with a newer glibc is resolved at this one: that can only leave out
# wheels that need the newer glibc, never let in one the target cannot load, and the lock still
# holds the sha256 of every file of each version it pins, so the target's own pip, which takes
# wheels up to its glibc, finds the hash of whichever file it picks.
uv_glibc=$("$uv" pip compile --help | grep -oE "${arches[0]}-manylinux_2_[0-9]+" \
  | sed -E 's/.*_2_/2./' | sort -t. -k2,2n | tail -n 1)
[ -n "$uv_glibc" ] || { echo "update.sh: $uv names no manylinux platforms" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# compile OUTPUT LOCK [uv pip compile arguments...]: resolve into OUTPUT, keeping the pins
# the existing LOCK (if any) holds where they still fit.
compile() {
  local out=$1 lock=$2
  shift 2
  if [ -f "$lock" ]; then cp "$lock" "$out"; fi
  "$uv" pip compile --quiet --no-header --generate-hashes --only-binary :all: \
    -o "$out" "$@"
}

for target in "${targets[@]}"; do
  read -r python glibc <<<"$target"
  minor=${python%.*}
  lock=py$minor.txt
  resolve_glibc=$glibc
  if [ "${glibc#2.}" -gt "${uv_glibc#2.}" ]; then resolve_glibc=$uv_glibc; fi
  for arch in "${arches[@]}"; do
    compile "$scratch/$arch" "$lock" ../pyproject.toml "${@}" \
      --python-version "$python" --python-platform "$arch-manylinux_${resolve_glibc/./_}"
  done
  for arch in "${arches[@]}"; do
    if ! cmp -s "$scratch/${arches[0]}" "$scratch/$arch"; then
      echo "update.sh: Python $python resolves differently on ${arches[0]} and $arch:" >&2
      diff "$scratch/${arches[0]}" "$scratch/$arch" >&2 || true
      echo "update.sh: split $lock by machine before adding this target." >&2
      exit 1
    fi
  done
  {
    echo "# The signaling app's runtime dependencies (app/pyproject.toml) for targets with Python $minor:"
    echo "# exact versions, wheels only, every file's sha256. Written by \`make lock\`"
    echo "# (app/locks/update.sh); do not edit. The role and its tests read the lines below."
    echo "# python: $python"
    echo "# glibc: $glibc"
    echo "# arches: ${arches[*]}"
    cat "$scratch/${arches[0]}"
  } > "$scratch/$lock"
  mv "$scratch/$lock" "$lock"
  echo "update.sh: $lock: $(grep -cE '^[A-Za-z0-9]' "$lock") packages for Python $python on ${arches[*]}" \
    "(glibc $glibc$([ "$resolve_glibc" = "$glibc" ] || echo ", resolved at $resolve_glibc"))"
done

# The build backend runs on the controller, whichever Python it has (the app's
# requires-python floor is the oldest).
requires_python=$(sed -nE 's/^requires-python *= *">=([0-9.]+)".*/\1/p' ../pyproject.toml)
sed -nE '/^\[build-system\]/,/^\[/ s/^requires *= *\[(.*)\].*/\1/p' ../pyproject.toml \
  | tr ',' '\n' | tr -d ' "' | grep . > "$scratch/build.in"
compile "$scratch/build.txt" build.txt "$scratch/build.in" --no-annotate "${@}" --python-version "$requires_python"
{
  echo "# The build backend of the signaling app's own wheel (app/pyproject.toml [build-system]),"
  echo "# every file's sha256. Written by \`make lock\` (app/locks/update.sh); do not edit."
  cat "$scratch/build.txt"
} > "$scratch/build.lock"
mv "$scratch/build.lock" build.txt
echo "update.sh: build.txt: $(grep -E '^[A-Za-z0-9]' build.txt | cut -d' ' -f1 | tr '\n' ' ')"
