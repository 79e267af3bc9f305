# The two commands that do everything on a fresh machine (Python 3.11 and Node/npm):
#   make run    install, then bring up the whole local stack on http://127.0.0.1:8030
#   make test   install, then run the whole test suite
#   make demo   (with `make run` up in another terminal) a consumer runs a real job end to end
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8030

STAGE ?= dev

.PHONY: install run demo test bench package deploy clean

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

# chalice package / chalice deploy, with bytecode in the deployment zip (infra/bytecode.py)
package: install
	$(PY) -m infra.bytecode --stage $(STAGE) -- package --merge-template infra/chalice-merge.json build/

deploy: install
	$(PY) -m infra.bytecode --stage $(STAGE) -- deploy

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache
