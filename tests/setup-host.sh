#!/usr/bin/env bash
# Installs the Debian packages `make test` needs on the controller: the real
# validators (nginx, apache2 + mod_evasive, nftables for `nft -c` of the
# firewall's rulesets; iptables to save and restore Docker's rules in a test
# host's network namespace around a flush), redis-server for the app's
# cluster tests, chromium and coturn for the browser tests (calls relayed
# through TURN), debootstrap and docker.io for Molecule's test hosts, and
# testssl.sh >= 3.2 to grade the deployed TLS (see below), and prometheus for
# its promtool (the monitoring kit's rule tests and config checks; the daemon is
# not left running), and for `make lint` shellcheck and, where there is no node
# or npm yet, Debian's nodejs and npm (ESLint, tests/lint/). Idempotent; called
# by `make test`.
set -euo pipefail

packages=(nginx apache2 libapache2-mod-evasive nftables iptables redis-server chromium coturn openssl curl
          debootstrap docker.io python3-venv)
packages+=(prometheus shellcheck)
# A node and npm from elsewhere (NodeSource, nvm) will do: Debian's would clash with them.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# testssl.sh rates a server (A+ .. F, JSON id `overall_grade`) only from 3.2 on;
# Debian 12 ships 3.0.8. The package is one architecture-independent script
# whose dependencies are all in Debian 12, so take it from Debian 13 (trixie)
# with apt, reading trixie's index into a private directory: the machine's own
# sources and pins stay as they are.
testssl_version=$(dpkg-query -W -f='${Version}' testssl.sh 2>/dev/null || true)
testssl_ok=""
[ -n "$testssl_version" ] && dpkg --compare-versions "$testssl_version" ge 3.2 && testssl_ok=1
[ ${#missing[@]} -eq 0 ] && [ -n "$testssl_ok" ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
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
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
  # The tests start their own turnserver on loopback; Debian's coturn.service, enabled
  # by the package with its sample config, would be a TURN server open on every address.
  if [[ " ${missing[*]} " == *" coturn "* ]] && [ "$(ps -p 1 -o comm= 2>/dev/null)" = "systemd" ]; then
    $sudo systemctl disable --now coturn.service
  fi
  # Only promtool is needed; the tests start their own prometheus on loopback.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ "$(ps -p 1 -o comm= 2>/dev/null)" = "systemd" ]; then
    $sudo systemctl disable --now prometheus.service
  fi
fi

if [ -z "$testssl_ok" ]; then
  echo "setup-host: installing testssl.sh >= 3.2 from Debian 13"
  trixie=$(mktemp -d)
  mkdir -p "$trixie/parts" "$trixie/lists/partial" "$trixie/cache/archives/partial"
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    > "$trixie/parts/trixie.sources"
  chmod -R a+rX "$trixie"
  private=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$trixie/parts"
           -o "Dir::State::Lists=$trixie/lists" -o "Dir::Cache=$trixie/cache")
  $sudo apt-get "${private[@]}" update -qq
  (cd "$trixie" && $sudo apt-get "${private[@]}" download -qq testssl.sh)
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$trixie"/testssl.sh_*_all.deb
  $sudo rm -rf "$trixie"
fi
