# The README's first two commands: `make up` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install up test lint format bench soak sim images clean

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

test: lint
	$(PY) -m pytest

# The web, worker and moto images from the Dockerfiles, on a local Debian base where no registry
# answers (docs/deploy.md). Needs a Docker engine; the container tests run what this built.
images:
	bash docker/build-images.sh

sim: install
	$(PY) -m scaler.sim

bench: install
	$(PY) -m bench

# The load test at 5000 requests, and the fault tests again.
soak: install
	SOAK_REQUESTS=5000 $(PY) -m pytest tests/test_load.py tests/test_faults.py

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache *.egg-info
