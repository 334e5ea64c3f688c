# The two commands of the README: `make run` (the main job) and `make test` (the suite).
# Both set everything up on a fresh machine and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test setup services cluster docker images lint bench chaos clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

services:
	bash configs/services.sh

# The real Kubernetes API server of the cluster tests, built from Debian's source package
# (cached in ~/.cache/hyperpool; cold: minutes, see k8s/testcluster/build.sh). Built here,
# before pytest starts, so that no test's timeout ever covers a build.
cluster:
	bash k8s/testcluster/build.sh

# Docker (Debian's docker.io, started in the background, Compose v2) and the project's images,
# built from this repository with Docker's layer cache (executors/build-images.sh).
docker:
	bash configs/docker.sh

images: docker
	bash executors/build-images.sh

lint: setup
	$(BIN)/ruff check .

test: setup services cluster images
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

run: setup services
	$(BIN)/python examples/demo.py

# The fault tests with more rounds (HYPERPOOL_CHAOS_ROUNDS SIGKILL storms, each >= 1,000 tasks).
chaos: setup services
	HYPERPOOL_CHAOS_ROUNDS=$${HYPERPOOL_CHAOS_ROUNDS:-5} $(BIN)/pytest -s tests/integration/test_faults.py

bench: setup services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
