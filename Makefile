# The two commands that do everything on a fresh machine (Python 3.13 and Node/npm):
#   make run    install, then bring up the whole local stack on http://127.0.0.1:8030
#   make test   install, then run the whole test suite
#   make demo   (with `make run` up in another terminal) a consumer runs a real job end to end
#   make canary (with `make run` up, or STAGE=<deployed stage>) probe every environment for escapes
#
# Python 3.13 is the Lambda runtime (Chalice deploys the Python it runs on), so .venv is made with
# it: `python3.13` if it runs, else pyenv's 3.13 (`pyenv prefix 3.13`, else the newest 3.13.x under
# $PYENV_ROOT/versions: installed but not on PATH), else `make PYTHON=/path/to/python3.13`.
PYTHON_VERSION := 3.13
IS_PYTHON_VERSION = import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(PYTHON_VERSION)".split("."))))
ifndef PYTHON
PYTHON := $(shell for candidate in python$(PYTHON_VERSION) \
                    "$$(pyenv prefix $(PYTHON_VERSION) 2>/dev/null | head -n 1)/bin/python$(PYTHON_VERSION)" \
                    $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/$(PYTHON_VERSION).*/bin/python$(PYTHON_VERSION) 2>/dev/null | sort -rV); do \
                    if "$$candidate" -c '$(IS_PYTHON_VERSION)' >/dev/null 2>&1; then \
                      "$$candidate" -c 'import sys; print(sys.executable)'; break; fi; done)
endif
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8030

STAGE ?= dev

.PHONY: install venv-python run demo test bench package deploy clean lock canary

install: venv-python $(VENV)/.installed node_modules/.installed

# A .venv of another Python (made by an older checkout) is made again.
venv-python:
	@if [ -x $(PY) ] && ! $(PY) -c '$(IS_PYTHON_VERSION)' >/dev/null 2>&1; then \
	  echo "$(VENV) is not Python $(PYTHON_VERSION): making it again"; rm -rf $(VENV); fi

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@if [ ! -x $(PY) ] && [ -z "$(PYTHON)" ]; then \
	  echo "Python $(PYTHON_VERSION) not found (neither python$(PYTHON_VERSION) nor pyenv's $(PYTHON_VERSION))." >&2; \
	  echo "Install Python $(PYTHON_VERSION) (e.g. 'pyenv install $(PYTHON_VERSION)', or your system's python$(PYTHON_VERSION)" >&2; \
	  echo "and python$(PYTHON_VERSION)-venv packages), or run: make PYTHON=/path/to/python$(PYTHON_VERSION)" >&2; \
	  exit 1; fi
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js and npm" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	PORT=$(PORT) $(PY) -m devstack

demo: install
	$(PY) -m devstack.demo

test: install test-packages
	$(PY) -m pytest

bench: install
	$(PY) -m bench

# chalice package / chalice deploy, with bytecode in the deployment zip (infra/bytecode.py)
package: install
	$(PY) -m infra.bytecode --stage $(STAGE) -- package --merge-template infra/chalice-merge.json build/

deploy: install
	$(PY) -m infra.bytecode --stage $(STAGE) -- deploy

# make canary: a probe job per compute environment, started through the provider's own start path,
# tries every escape of a sealed job; prints the table, exits 1 on any escape (README, "Canary").
# Without STAGE (or STAGE=local) it runs against `make run`; with STAGE=dev|prod against that
# deployed stage (CANARY_PRIVATE_KEY, the canary datasets of `python -m canary publish`, and
# CANARY_IMAGE pinned by digest). CANARY_ARGS adds options (--path free, --environment ID...).
CANARY_STAGE = $(if $(filter file,$(origin STAGE)),local,$(STAGE))
canary: install
	$(PY) -m canary run --stage $(CANARY_STAGE) $(if $(CANARY_IMAGE),--image $(CANARY_IMAGE)) $(CANARY_ARGS)

# The locks: exact versions with hashes, compiled by uv (pinned in requirements-dev.txt) from the
# ranges of the .in files. `make lock` takes the newest versions the ranges allow;
# `make lock PACKAGES="boto3 botocore"` moves only those (and adds what an edited .in needs).
# Then `make test` and `make bench`, and read the diff of the locks (README, "Locked dependencies").
LOCK_PYTHON_PLATFORM := x86_64-manylinux2014
COMPAT_PYTHON_VERSION := 3.11
COMPILE = $(VENV)/bin/uv pip compile --quiet --generate-hashes --custom-compile-command "make lock" \
          $(if $(PACKAGES),$(addprefix --upgrade-package ,$(PACKAGES)),--upgrade)
lock: install
	$(COMPILE) --python-version $(PYTHON_VERSION) --python-platform $(LOCK_PYTHON_PLATFORM) requirements.in -o requirements.txt
	$(COMPILE) --universal --python-version $(PYTHON_VERSION) requirements-dev.in -o requirements-dev.txt
	$(COMPILE) --universal --python-version $(COMPAT_PYTHON_VERSION) tests/compat/requirements-ocean-py.in -o tests/compat/requirements-ocean-py.txt
	$(MAKE) install

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache

# Debian packages, installed with apt-get when the command they provide is missing and make runs
# as root on Debian or Ubuntu (CI does); elsewhere make says what to install. `make run` needs
# bubblewrap (it sandboxes local jobs' algorithms, devstack/sandbox.py; setpriv from util-linux
# drops it to its own UID as root); the tests also run the real busybox, iptables and ip netns
# (the algorithm container's script, the Batch instances' network rules), runc with setcap/capsh
# (the instances' OCI runtime against a file-capped image), a headless chromium, and Debian's
# docker-registry (the distribution registry the image pinning tests resolve tags through).
RUN_PACKAGES := bwrap:bubblewrap
TEST_PACKAGES := $(RUN_PACKAGES) busybox:busybox-static iptables-restore:iptables ip:iproute2 chromium:chromium \
                 runc:runc setcap:libcap2-bin docker-registry:docker-registry
.PHONY: run-packages test-packages
install: run-packages
run-packages:
	@$(call debian_packages,$(RUN_PACKAGES))
test-packages:
	@$(call debian_packages,$(TEST_PACKAGES))

define debian_packages
missing=""; for pair in $(1); do command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
if [ -n "$$missing" ]; then \
  if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    echo "installing Debian packages:$$missing"; \
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
  else \
    echo "note: install$$missing (Debian/Ubuntu: sudo apt-get install$$missing); without them local jobs run unsandboxed and some tests skip"; \
  fi; \
fi
endef
