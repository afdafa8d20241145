# kubepd — the two commands a new user needs are `make demo` and `make test`.
SHELL := bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo serve swarm test soak check lint typecheck layers unit proto policies kube-tools kube-up kube-down bench clean node-tools image node-up node-down test-node

# mypy cannot see through the editable install's finder, so `operator/` is shown to it
# as `pd_operator` by a link (pyproject's mypy_path).
$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	mkdir -p $(VENV)/mypy-path && ln -sfn ../../operator $(VENV)/mypy-path/pd_operator
	touch $(STAMP)

setup: $(STAMP)

## demo: embedded kubepd + a simulated TiKV fleet being scheduled, with a live view
demo: setup
	$(BIN)/kubepd demo

## serve: a single-node PD with the embedded store on 127.0.0.1:2379 (status :2381)
serve: setup
	$(BIN)/kubepd serve --name pd --data-dir data/pd --log-format text

## test: every check and every test (installs what it needs, including kube-apiserver)
test: setup
	bash scripts/test-all

## soak: the fault suite at full size (1,000 kill -9 restarts, many more bad messages)
soak: setup
	KUBEPD_FAULT_CYCLES=$${KUBEPD_FAULT_CYCLES:-1000} KUBEPD_FUZZ_ROUNDS=$${KUBEPD_FUZZ_ROUNDS:-200} \
		$(BIN)/python -m pytest -q -s -p no:cacheprovider --timeout=0 tests/fault

check: lint typecheck layers

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

layers: setup
	$(BIN)/lint-imports

proto: setup
	bash scripts/gen-proto

policies: setup
	bash policies/build.sh

kube-tools:
	bash scripts/kube-tools

kube-up: setup kube-tools
	$(BIN)/python -m tests.support.kubecluster up --dir .kube-local --controller-manager
	$(HOME)/.cache/kubepd/k8s-v1.33.5/kubectl --kubeconfig .kube-local/kubeconfig apply -f deploy/crds
	@echo "KUBECONFIG=$(CURDIR)/.kube-local/kubeconfig"

kube-down: setup
	$(BIN)/python -m tests.support.kubecluster down --dir .kube-local

## swarm: a long fault swarm (SEEDS seeds, default 200); CI runs a bounded one in the tests
SEEDS ?= 200
swarm: setup
	$(BIN)/kubepd simulate --swarm $(SEEDS)

bench: setup
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache policies/build

## node-up / node-down: a one-node Kubernetes cluster (kubelet + containerd, root) in .node-local/
node-tools: kube-tools
	bash scripts/node-deps
	bash scripts/node-tools

image: node-tools
	bash scripts/build-image

node-up: setup node-tools
	$(BIN)/python -m tests.support.node up --dir .node-local \
	  --image-dir "$$(bash scripts/build-image | tail -1)" \
	  --image-dir "$$(bash scripts/build-image pause $(HOME)/.cache/kubepd/node-v1.33.5/pause | tail -1)"
	@echo "KUBECONFIG=$(CURDIR)/.node-local/kubeconfig"

node-down: setup
	$(BIN)/python -m tests.support.node down --dir .node-local

## test-node: the node suite alone (helm install → real pods); needs root
test-node: setup node-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/node $(ARGS)
