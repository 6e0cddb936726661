# The README's first two commands: `make up` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# checkov pins boto3, networkx and packaging below what the project needs: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
TEMPLATE := deployment/template.yaml

.PHONY: install up test lint scan format bench soak sim clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(PY) -m embedded up

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q 'checkov>=3.2,<4'
	touch $(CHECKOV_STAMP)

# The stack's template: CloudFormation's own linter, then a security scan. Every check checkov
# skips is listed beside its resource in the template, with the reason.
scan: install $(CHECKOV_STAMP)
	$(VENV)/bin/cfn-lint $(TEMPLATE)
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f $(TEMPLATE)

test: lint scan
	$(PY) -m pytest

sim: install
	$(PY) -m scaler.sim

bench: install
	$(PY) -m bench

# The load test at 5000 requests, the fault tests again, and 10 minutes of chaos with the scaler.
soak: install
	SOAK_REQUESTS=5000 $(PY) -m pytest tests/test_load.py tests/test_faults.py
	CHAOS_S=600 $(PY) -m pytest -s tests/test_chaos.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .run .pytest_cache .ruff_cache *.egg-info
