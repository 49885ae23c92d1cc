# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORSO := $(VENV)/bin/corso
S3_PLUGIN := $(wildcard plugins/corso_s3/pyproject.toml)

.PHONY: demo test soak bench bench-quick lint clean

$(VENV)/.installed: pyproject.toml $(S3_PLUGIN)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e . $(if $(S3_PLUGIN),-e ./plugins/corso_s3)
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

# The benchmark (issue 6): corso vs restic and borg on the same data; writes bench/results.*.
# Peers come from Debian (bench/install-peers.sh); one that cannot be installed is skipped.
# An editable install has no bytecode: compile it, as a wheel install would, so corso is timed
# without re-compiling its sources each run (~0.15 s a command where PYTHONDONTWRITEBYTECODE=1).
bench: $(VENV)/.bench-installed
	bash bench/install-peers.sh
	$(PY) -m compileall -q corso_core plugins
	$(PY) -m bench.run

bench-quick: $(VENV)/.bench-installed
	bash bench/install-peers.sh
	$(PY) -m compileall -q corso_core plugins
	$(PY) -m bench.run --quick

demo: $(VENV)/.installed
	bash docs/demo.sh $(CORSO)

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check corso_core plugins tests bench

test: lint
	$(PY) -m pytest -q -p no:cacheprovider

# Many hypothesis examples of random trees and edits, and other long runs (marker "soak").
soak: $(VENV)/.test-installed
	$(PY) -m pytest -q -p no:cacheprovider -m soak

clean:
	rm -rf $(VENV) demo build dist .pytest_cache .ruff_cache
