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

demo: $(VENV)/.installed
	bash docs/demo.sh $(CORSO)

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check corso_core plugins tests bench

test: lint
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) demo build dist .pytest_cache .ruff_cache
