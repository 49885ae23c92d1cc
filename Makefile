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

# The benchmark times corso as pip installs it for a user: built into wheels (bytecode compiled
# at install) in a venv of its own, remade when a source changes. The editable install of
# .venv would add its import finders (~20 ms of every command, cold) and, without bytecode,
# re-compile corso's sources each run.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml $(S3_PLUGIN) $(shell find corso_core plugins/corso_s3/corso_s3 -name '*.py')
	rm -rf $(BENCH_VENV) build plugins/corso_s3/build  # a stale build/lib would be packaged too
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q '.[bench]' $(if $(S3_PLUGIN),./plugins/corso_s3)
	touch $@

# The benchmark (issue 6): corso vs restic and borg on the same data; writes bench/results.*.
# Peers come from Debian (bench/install-peers.sh); one that cannot be installed is skipped.
bench: $(BENCH_VENV)/.installed
	bash bench/install-peers.sh
	$(BENCH_VENV)/bin/python -m bench.run

bench-quick: $(BENCH_VENV)/.installed
	bash bench/install-peers.sh
	$(BENCH_VENV)/bin/python -m bench.run --quick

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
	rm -rf $(VENV) $(BENCH_VENV) demo build dist .pytest_cache .ruff_cache
