#!/usr/bin/env bash
# Installs the Debian packages `make test` needs on the controller: the real
# validators (nginx, apache2 + mod_evasive), redis-server for the app's
# cluster tests, chromium for the browser tests, debootstrap and docker.io for
# Molecule's test hosts. Idempotent; called by `make test`.
set -euo pipefail

packages=(nginx apache2 libapache2-mod-evasive redis-server chromium openssl curl
          debootstrap docker.io python3-venv)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup-host: installing ${missing[*]}"
# Without systemd as PID 1 (containers, CI), package scripts must not start
# nginx/apache/redis daemons: the tests only need the binaries and start
# their own servers on free ports.
guard=""
if [ "$(ps -p 1 -o comm= 2>/dev/null)" != "systemd" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  guard=1
fi
trap '[ -n "$guard" ] && $sudo rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
