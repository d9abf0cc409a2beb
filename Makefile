# kapell developer commands. Every target creates the virtualenv it needs, so a fresh clone
# needs nothing installed by hand: `make quickstart`, `make test`.
#
# Installs are locked: requirements/test.txt (what `make test` and CI install),
# requirements/quickstart.txt (the light set `make quickstart` needs: no torch) and
# requirements/image.txt (the container image's set, Containerfile) pin every package with its
# hashes. `make lock` regenerates all three from pyproject.toml's ranges;
# `make test-latest` checks the newest versions those ranges allow, in a venv of its own.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
LATEST_VENV ?= .venv-latest
LATEST_EXTRAS ?= dev,onnx,plot,kubernetes
# The lock is universal (every platform's wheels and hashes) and resolved for Python 3.11.
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet

.PHONY: venv test check quickstart clean k8s-bin kuberay e2e lock test-latest chart-crds console-assets console-screenshots

venv: $(VENV)/.installed-test

$(PY):
	@echo "==> creating the virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# One stamp per lock file, so the quickstart's set and the test set can share .venv: each is
# installed when its stamp is missing or older than its lock. The quickstart's lock is resolved
# within the test lock's pins, so installing one after the other never changes a version.
$(VENV)/.installed-%: requirements/%.txt pyproject.toml | $(PY)
	@echo "==> installing requirements/$*.txt into $(VENV): pinned versions, hashes checked"
	$(PY) -m pip install --require-hashes -r requirements/$*.txt
	@echo "==> installing kapell itself (editable, no dependencies: the lock has them)"
	$(PY) -m pip install --no-deps --no-build-isolation -e .
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

## k8s-bin: build etcd, kube-apiserver, -scheduler, -controller-manager, kubectl, kwok, helm into k8s-bin/
k8s-bin:
	hack/k8s/build.sh

## kuberay: build KubeRay's operator into k8s-bin/ (for the opt-in KubeRay e2e test, KAPELL_E2E_KUBERAY=1)
kuberay:
	hack/k8s/build.sh kuberay-operator

## chart-crds: regenerate the Helm chart's CRDs from `kapell crds` and copy the drift alert rules
## into it (unit tests check both match)
CHART := deploy/helm/kapell
chart-crds: venv
	$(VENV)/bin/kapell crds > $(CHART)/crds/kapell.dev.yaml
	cp deploy/prometheus/kapell-drift-rules.yaml $(CHART)/files/kapell-drift-rules.yaml

## console-assets: fetch htmx and uPlot (pinned) from npm into the console's static/vendor/
## (the files are committed: `make test` needs no npm; run this to update them)
console-assets:
	hack/console-assets.sh

## console-screenshots: run the console's browser test and copy its screenshots into docs/img/
## (needs Debian's chromium and chromium-driver, as the test does)
console-screenshots: venv
	KAPELL_CONSOLE_SCREENSHOTS=docs/img $(PY) -m pytest tests/integration/local/test_console.py

## e2e: end-to-end tests against a local control plane with fake GPU nodes (builds what is missing)
e2e: venv k8s-bin
	$(PY) -m pytest tests/e2e

## quickstart: serve the bundled tiny Shakespeare model and print the gateway URL
## (installs about 300 MB: the onnx engine, no torch)
quickstart: $(VENV)/.installed-quickstart
	$(VENV)/bin/kapell up -f examples/quickstart.yaml

## lock: re-resolve requirements/*.txt from pyproject.toml's ranges (newest versions allowed)
lock: | $(PY)
	test -x $(VENV)/bin/uv || $(PY) -m pip install 'uv>=0.5'
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in \
	    --extra dev --extra reference --extra plot --extra kubernetes --extra onnx --extra ray --extra mcp --extra otel \
	    --extra vectors \
	    $(LOCK_FLAGS) -o requirements/test.txt
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra onnx \
	    -c requirements/test.txt $(LOCK_FLAGS) -o requirements/quickstart.txt
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra kubernetes --extra onnx --extra vectors \
	    -c requirements/test.txt $(LOCK_FLAGS) -o requirements/image.txt

## test-latest: the unit tests and the onnx engine's tests against the newest versions that
## pyproject.toml's ranges allow (no lock), in $(LATEST_VENV); LATEST_EXTRAS adds extras
test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --upgrade --upgrade-strategy eager -e '.[$(LATEST_EXTRAS)]'
	$(LATEST_VENV)/bin/python -m pip list
	$(LATEST_VENV)/bin/python -m pytest -p no:cacheprovider tests/unit tests/integration/test_onnx_engine.py

clean:
	rm -rf $(VENV) $(LATEST_VENV) .kapell .mypy_cache .ruff_cache .pytest_cache

.PHONY: bench-env bench-gateway

## bench-env: LiteLLM's proxy in a virtualenv of its own (its pins clash with kapell's)
bench-env: .venv-litellm/bin/litellm

.venv-litellm/bin/litellm:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/pip install -q 'litellm[proxy]==1.81.13'

## bench-gateway: kapell's gateway against direct calls and LiteLLM (about 5 minutes)
bench-gateway: venv bench-env
	nice -n 5 $(VENV)/bin/kapell bench gateway --json
