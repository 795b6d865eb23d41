# webrtc-edge. The two commands that matter:
#   make deploy   install the signaling service on this machine (nginx, self-signed TLS)
#   make test     everything that proves it
# Both install what they need themselves. `make help` lists the rest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
PYTEST    := $(VENV)/bin/pytest
PROXY     ?= nginx
# Molecule runs, SCENARIO@RELEASE[+PROXY] (tests/tools/run-matrix.sh), longest first, but cluster
# (no flood check) before default and apache, whose flood checks then come after resilience's
# loads instead of waiting for them (one load-timed check at a time: cpu_first). Debian 13
# gets every scenario; Debian 12 the OS upgrade from it (upgrade). The runs that do not fit
# make test's 65 minutes on 2 cores are MOLECULE_RUNS_EXTRA (`make molecule-extra`).
MOLECULE_RUNS   ?= upgrade@bookworm resilience@trixie cluster@trixie default@trixie apache@trixie \
                   local@trixie acme@trixie
MOLECULE_RUNS_EXTRA ?= cluster@bookworm upgrade@trixie default@bookworm apache@bookworm local@bookworm \
                       acme@bookworm
# make test's jobs at a time: lint-and-unit, each Molecule run, app-and-browser-test (each
# takes about a core).
TEST_JOBS       ?= 2
# make molecule's runs at a time.
MOLECULE_JOBS   ?= 2
RESILIENCE_RUNS ?= resilience@trixie
INVENTORY ?= inventories/local
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)
# Not root: Ansible asks for the sudo password once.
BECOME    := $(if $(filter 0,$(shell id -u)),,--ask-become-pass)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Molecule and ansible-lint call ansible-playbook, ansible-config and pytest by name.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help deploy diagnose test venv lock test-deps lint lint-shell lint-js unit app-test browser-test lint-and-unit app-and-browser-test molecule molecule-extra resilience bench clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# -- the controller's virtualenv ------------------------------------------------

# The app's runtime dependencies come at the versions its lock ships to targets of this
# Python (app/locks/py<X.Y>.txt, hashes left out), so the app's tests test what is deployed.
APP_LOCK = app/locks/py$(shell python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])').txt

$(VENV)/.installed: requirements.txt app/pyproject.toml $(wildcard app/locks/py*.txt)
	@python3 -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv"; $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	@if [ -f $(APP_LOCK) ]; then grep -oE '^[A-Za-z0-9._-]+==[^[:space:];]+' $(APP_LOCK) > $(VENV)/app-constraints.txt; \
	else echo "warning: no $(APP_LOCK): the app's dependencies are not pinned in $(VENV)" >&2; : > $(VENV)/app-constraints.txt; fi
	$(VENV)/bin/pip install -q -r requirements.txt -c $(VENV)/app-constraints.txt -e './app[test]'
	@touch $@

# The clone as the collection webrtc_edge.edge, where ansible.cfg's collections_path looks.
COLLECTION_LINK = $(VENV)/collections/ansible_collections/webrtc_edge/edge

$(COLLECTION_LINK): | $(VENV)/.installed
	mkdir -p $(@D)
	ln -sfn $(CURDIR) $@

venv: $(VENV)/.installed $(COLLECTION_LINK)  ## create or update the controller virtualenv (.venv)

# Needs PyPI. LOCK_ARGS go to uv: --upgrade (all to the newest allowed), --upgrade-package NAME.
lock: venv  ## rewrite app/locks/ (the app's dependencies, with hashes) from app/pyproject.toml
	UV=$(VENV)/bin/uv bash app/locks/update.sh $(LOCK_ARGS)

# -- deploy ----------------------------------------------------------------------

deploy: venv  ## deploy on this machine: PROXY=nginx|apache, INVENTORY=inventories/local
	$(VENV)/bin/ansible-playbook -i $(INVENTORY) site.yml -e proxy_server=$(PROXY) $(BECOME)

# Read-only: checks the deployment and prints a table of check, host, ok/warn/FAIL and what to do.
diagnose: venv  ## check a deployment, change nothing (docs/troubleshooting.md): INVENTORY=inventories/local
	$(VENV)/bin/ansible-playbook -i $(INVENTORY) playbooks/diagnose.yml $(BECOME)

# -- test ------------------------------------------------------------------------

# One queue, TEST_JOBS at a time, in this order as each ends: lint then unit (quick to fail), the
# Molecule runs longest first, then the app's suites, which fill one core while the last runs
# end. Each job's output is printed whole when it ends (make -O); after a failure the others
# still run (make -k), so one CI log shows every failure.
test: test-deps  ## everything (what CI runs)
	$(MAKE) --no-print-directory -j$(TEST_JOBS) -k --output-sync=target lint-and-unit \
	  $(addprefix run-,$(MOLECULE_RUNS)) app-and-browser-test
	@$(PY) tests/tools/report.py
	@echo "make test: all checks passed"

test-deps: venv
	bash tests/setup-host.sh

lint: venv lint-shell lint-js  ## shellcheck, ESLint, yamllint, ruff, mypy, ansible-lint (production profile), playbook syntax
	$(VENV)/bin/yamllint --strict .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/ansible-lint --profile production --offline
	$(VENV)/bin/ansible-playbook -i inventories/local site.yml --syntax-check
	$(VENV)/bin/ansible-playbook -i inventories/example site.yml --syntax-check

# The shell scripts: files git tracks, or would (untracked, not ignored), named *.sh or *.bash
# or starting with an sh, bash, dash or ksh #! line. Shell inside Ansible tasks is not linted.
HASH := \#
SHELL_SCRIPTS = $(shell awk 'FNR == 1 { if (FILENAME ~ /[.](ba)?sh$$/ || /^$(HASH)!.*[\/ ]((ba|da|k)?sh)([ \t]|$$)/) print FILENAME; nextfile }' \
                  $(wildcard $(shell git ls-files --cached --others --exclude-standard)) </dev/null)

lint-shell:  ## shellcheck on every shell script (Debian's shellcheck: make test-deps installs it)
	@command -v shellcheck >/dev/null || { echo "make lint: no shellcheck here; \`make test-deps\` installs it (or: apt-get install shellcheck)" >&2; exit 1; }
	@scripts="$(SHELL_SCRIPTS)"; [ -n "$$scripts" ] || { echo "make lint: no shell scripts found (not a git checkout?)" >&2; exit 1; }; \
	  echo "shellcheck $$scripts"; shellcheck $$scripts

# ESLint and its configs at the versions of tests/lint/package-lock.json, in tests/lint/node_modules/
# (gitignored); `npm ci` again only when the lock or package.json is newer than that install.
JS_LINT := tests/lint
$(JS_LINT)/node_modules/.installed: $(JS_LINT)/package.json $(JS_LINT)/package-lock.json
	@command -v npm >/dev/null || { echo "make lint: no npm here; \`make test-deps\` installs it (or: apt-get install nodejs npm)" >&2; exit 1; }
	cd $(JS_LINT) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

lint-js: $(JS_LINT)/node_modules/.installed  ## ESLint on the app's browser client (npm ci into tests/lint/node_modules first)
	$(JS_LINT)/node_modules/.bin/eslint --config $(JS_LINT)/eslint.config.js app/src/signaling/static/js $(JS_LINT)/*.js

unit: venv  ## filter plugins, validators (nginx -t, apache2 -t, gixy), role and playbook checks
	$(PYTEST) -q tests

app-test: venv  ## the signaling app on both hubs (memory, real redis-server)
	cd app && ../$(PYTEST) -q -m "not browser"

browser-test: venv  ## the app's client in Debian's chromium (Playwright)
	cd app && ../$(PYTEST) -q -m browser

# One job each in make test's queue (a goal whose prerequisites run as jobs of their own would
# wait behind the queue: lint did, measured, and ran last).
lint-and-unit: venv
	$(MAKE) --no-print-directory -k lint unit

app-and-browser-test: venv
	$(MAKE) --no-print-directory app-test
	$(MAKE) --no-print-directory browser-test

molecule: venv  ## end-to-end on systemd containers: MOLECULE_RUNS, MOLECULE_JOBS at a time (builds images first)
	JOBS=$(MOLECULE_JOBS) bash tests/tools/run-matrix.sh $(MOLECULE_RUNS)

# One run of make test's queue: run-default@trixie, run-resilience@bookworm+apache, ...
run-%: venv
	bash tests/tools/run-matrix.sh $*

molecule-extra: venv  ## the runs make test leaves out (MOLECULE_RUNS_EXTRA: Debian 12's cluster, default, apache, local, acme; Debian 13's upgrade)
	JOBS=$(MOLECULE_JOBS) bash tests/tools/run-matrix.sh $(MOLECULE_RUNS_EXTRA)

resilience: venv  ## 1,000 peers through faults, nothing lost: nginx, then Apache (figures in molecule/artifacts/)
	bash tests/tools/run-matrix.sh $(RESILIENCE_RUNS)
	@$(PY) tests/tools/report.py

bench: venv  ## benchmarks, see bench/README.md
	$(MAKE) -C bench all PY=$(abspath $(PY))

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .cache app/build app/src/*.egg-info
