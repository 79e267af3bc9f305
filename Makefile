# The two commands that do everything on a fresh machine (Python 3.11 and Node/npm):
#   make run    install, then bring up the whole local stack on http://127.0.0.1:8030
#   make test   install, then run the whole test suite
#   make demo   (with `make run` up in another terminal) a consumer runs a real job end to end
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8030

.PHONY: install run demo test bench clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	PORT=$(PORT) $(PY) -m devstack

demo: install
	$(PY) -m devstack.demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache

# bubblewrap sandboxes the algorithm of local jobs (devstack/sandbox.py); setpriv (util-linux)
# drops it to its own UID when the stack runs as root. Installed here when root on Debian or
# Ubuntu; otherwise `make run` says that local jobs run unsandboxed.
.PHONY: sandbox
install: sandbox
sandbox:
	@if [ "$$(uname -s)" = Linux ] && ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq bubblewrap; }; \
	  else \
	    echo "note: install bubblewrap (e.g. sudo apt-get install bubblewrap) to sandbox local jobs' algorithms"; \
	  fi; \
	fi
