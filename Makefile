# Orrery — the two commands a user needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Every Python dependency comes from uv.lock (exact versions, hashes), installed by the uv that
# tools/uv-requirements.txt pins (itself installed with pip --require-hashes into .uv/; the
# machine's network settings, certificates and proxies, still apply). uv uses this Python
# ($(PYTHON)), never one it downloads.
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
UV_STAMP := $(UV_HOME)/.installed
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# What .venv holds: the server and the development tools (the `dev` extra, which includes `server`).
SYNC_EXTRAS := --extra dev

MODULES := quickstart-chat module-test transfer bank
CLANG ?= clang
WASM_CFLAGS := --target=wasm32 -nostdlib -mbulk-memory -O2 -Wall -Werror \
	-Wl,--no-entry -Wl,--strip-all -Wl,--export=__call_reducer__ -Wl,--export=__describe_module__ \
	-Imodules/include

.PHONY: all install lock lock-upgrade test lint typecheck pytest fuzz bench modules proto dashboard system-deps clean run k8s-rules native

all: install

$(UV_STAMP): tools/uv-requirements.txt
	@if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		echo "installing python3-venv (needed to create $(UV_HOME))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	fi
	rm -rf $(UV_HOME)
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip --disable-pip-version-check install -q --no-cache-dir \
		--require-hashes --only-binary :all: -r tools/uv-requirements.txt
	touch $(UV_STAMP)

# --locked: install exactly uv.lock, and stop (saying so) when pyproject.toml has changed
# since the lock was made (`make lock` then).
$(STAMP): $(UV_STAMP) uv.lock pyproject.toml
	@$(UV) sync --locked $(SYNC_EXTRAS) --python $(PYTHON) || { \
		echo "make: installing from uv.lock failed; if pyproject.toml changed, run \`make lock\` and commit uv.lock" >&2; \
		exit 1; }
	touch $(STAMP)

install: $(STAMP)

# Re-resolve uv.lock after a change to pyproject.toml; versions already locked stay unless the
# change needs others. `make lock-upgrade` moves every package to its newest allowed version.
lock: $(UV_STAMP)
	$(UV) lock --python $(PYTHON)

lock-upgrade: $(UV_STAMP)
	$(UV) lock --upgrade --python $(PYTHON)

# Debian packages the tests need, installed only where missing (CI runs as root).
system-deps:
	@if ! command -v $(CLANG) >/dev/null || ! command -v wasm-ld >/dev/null; then \
		echo "installing clang + lld (needed to build test modules)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld >/dev/null; \
	fi
# Node.js + npm for tests/interop (the official TypeScript SDK; npm ci runs inside the test).
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo "installing nodejs + npm (needed by the TypeScript SDK interop test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi
# etcd for the MetaStore/coordination tests and cluster tests (apt never starts the service).
	@if ! command -v etcd >/dev/null; then \
		echo "installing etcd-server (needed by the etcd MetaStore tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; \
	fi

# Prometheus and promtool for the dashboard and alert-rule tests (the package's service is never
# started: tests run their own server on a free port).
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
		echo "installing prometheus (needed by the dashboard and alert-rule tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

# Build the C test modules. The built .wasm files are committed, so nothing else needs clang.
# MODULES_OUT=dir writes dir/<name>.wasm instead of modules/<name>/<name>.wasm (used by tests).
MODULES_OUT ?=
modules: system-deps
	@for m in $(MODULES); do \
		out=$(if $(MODULES_OUT),$(MODULES_OUT),modules/$$m)/$$m.wasm; \
		echo "building $$out"; \
		$(CLANG) $(WASM_CFLAGS) -o $$out modules/$$m/*.c || exit 1; \
	done

# The Grafana dashboard is built by tools/grafana_dashboard.py; tests fail when the JSON is stale.
dashboard: install
	$(PY) tools/grafana_dashboard.py

# Generated gRPC code lives next to the .proto files and is committed; tests fail when stale.
PROTOS := proto/hostnode.proto proto/controlplane.proto
proto: install
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# The Prometheus Operator's copy of the alert rules (deploy/k8s/components/monitoring), generated
# from deploy/prometheus/alerts.yaml; tests/k8s fails while it is out of date.
k8s-rules: install
	$(PY) tools/k8s_prometheusrule.py

# The engine's hot modules compiled with mypyc beside their sources (tools/build_native.py):
# rebuilt whenever one of their sources changed (a stale copy would shadow it), skipped with one
# line where there is no C compiler. NATIVE=0 (or ORRERY_NATIVE=0) removes the compiled copies
# instead, so everything runs as plain Python.
NATIVE ?= $(if $(ORRERY_NATIVE),$(ORRERY_NATIVE),1)
native: install
	@ORRERY_NATIVE=$(NATIVE) $(PY) tools/build_native.py

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy

# pytest on PYTEST_WORKERS processes (pytest-xdist; 0 runs it in this one): most cluster, fault
# and server tests wait on processes, timers and fsyncs, so two workers nearly halve the time on
# two cores. --dist loadfile keeps each test file on one worker (module fixtures, shared servers).
PYTEST_WORKERS ?= 2
pytest: install system-deps native
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test: install system-deps lint typecheck pytest

# The long fuzz run (tests/fuzz): each target — the BSATN, SATS-JSON, WebSocket-message, SQL and
# module-definition decoders, then HTTP and WebSocket traffic to a real server — for FUZZ_SECONDS
# seconds, one after another; prints the inputs each ran and stops at the first failure.
# `make test` runs a short fixed set of the same inputs.
FUZZ_SECONDS ?= 60
fuzz: install
	$(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS)

bench: install native
	$(PY) -m loadtest.bench_txdata
	$(PY) -m loadtest.bench_engine
	$(PY) -m loadtest.bench_http
	$(PY) -m loadtest.bench_ws
	$(PY) -m loadtest.bench_cluster
	$(PY) -m loadtest.bench_shapes
	$(PY) -m loadtest.bench_transport
	$(PY) -m loadtest.bench_isolation
# Instructions per call of each server process (callgrind: the figure that does not move with
# the machine's speed); skipped without valgrind.
	@if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then \
		for protocol in http ws; do for process in gateway node; do \
			$(PY) -m loadtest.callgrind_calls --protocol $$protocol --process $$process --calls 2000 || exit 1; \
		done; done; \
	else echo "valgrind is not installed: instructions per call not counted (apt-get install valgrind)"; fi

# Standalone Orrery on RUN_ADDR with data in RUN_DATA, quickstart-chat published; Ctrl-C stops it.
RUN_ADDR ?= 127.0.0.1:3000
RUN_DATA ?= data
run: install native
	$(PY) -m orrery.quickstart --listen-addr $(RUN_ADDR) --data-dir $(RUN_DATA)

clean:
	rm -rf $(VENV) $(UV_HOME) build .pytest_cache .mypy_cache .ruff_cache
	rm -f hostnode/*.so
