# kapell developer commands. Every target creates the virtualenv it needs, so a fresh clone
# needs nothing installed by hand: `make quickstart`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
EXTRAS ?= dev,reference,plot,kubernetes

.PHONY: venv test check quickstart clean k8s-bin e2e

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

## check: formatting, lint, types and the layer contracts
check: venv
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## test: the checks, then unit and integration tests
test: check
	$(PY) -m pytest

## k8s-bin: build etcd, kube-apiserver, -scheduler, -controller-manager, kubectl, kwok into k8s-bin/
k8s-bin:
	hack/k8s/build.sh

## e2e: end-to-end tests against a local control plane with fake GPU nodes (builds what is missing)
e2e: venv k8s-bin
	$(PY) -m pytest tests/e2e

## quickstart: serve the bundled tiny Shakespeare model and print the gateway URL
quickstart: venv
	$(VENV)/bin/kapell up -f examples/quickstart.yaml

clean:
	rm -rf $(VENV) .kapell .mypy_cache .ruff_cache .pytest_cache

.PHONY: bench-env bench-gateway

## bench-env: LiteLLM's proxy in a virtualenv of its own (its pins clash with kapell's)
bench-env: .venv-litellm/bin/litellm

.venv-litellm/bin/litellm:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/pip install -q 'litellm[proxy]==1.81.13'

## bench-gateway: kapell's gateway against direct calls and LiteLLM (about 5 minutes)
bench-gateway: venv bench-env
	nice -n 5 $(VENV)/bin/kapell bench gateway --json
