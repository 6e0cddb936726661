# The README's first two commands: `make up` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# checkov pins boto3, networkx and packaging below what the project needs: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
TEMPLATE := deployment/template.yaml

.PHONY: install up forget test lint scan format bench soak sim images clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The model is exported to ONNX and checked once (MODEL_CACHE_DIR), not by each worker at its start.
up: install
	$(PY) -m worker.models export
	$(PY) -m embedded up

# What `make up` measured (boot times, throughput) is kept in .run/ for the next one; this drops it.
forget: install
	$(PY) -m embedded forget

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

# The web, worker and moto images from the Dockerfiles, on a local Debian base where no registry
# answers (docs/deploy.md). Needs a Docker engine; the container tests run what this built.
images:
	bash docker/build-images.sh

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
