# Orrery — the two commands a user needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODULES := quickstart-chat module-test transfer bank
CLANG ?= clang
WASM_CFLAGS := --target=wasm32 -nostdlib -mbulk-memory -O2 -Wall -Werror \
	-Wl,--no-entry -Wl,--strip-all -Wl,--export=__call_reducer__ -Wl,--export=__describe_module__ \
	-Imodules/include

.PHONY: all install test lint typecheck pytest bench modules proto system-deps clean run

all: install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

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

# Build the C test modules. The built .wasm files are committed, so nothing else needs clang.
# MODULES_OUT=dir writes dir/<name>.wasm instead of modules/<name>/<name>.wasm (used by tests).
MODULES_OUT ?=
modules: system-deps
	@for m in $(MODULES); do \
		out=$(if $(MODULES_OUT),$(MODULES_OUT),modules/$$m)/$$m.wasm; \
		echo "building $$out"; \
		$(CLANG) $(WASM_CFLAGS) -o $$out modules/$$m/*.c || exit 1; \
	done

# Generated gRPC code lives next to the .proto files and is committed; tests fail when stale.
PROTOS := proto/hostnode.proto proto/controlplane.proto
proto: install
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install system-deps
	$(VENV)/bin/pytest -q

test: install system-deps lint typecheck pytest

bench: install
	$(PY) -m loadtest.bench_engine
	$(PY) -m loadtest.bench_http
	$(PY) -m loadtest.bench_ws

# Standalone Orrery on RUN_ADDR with data in RUN_DATA, quickstart-chat published; Ctrl-C stops it.
RUN_ADDR ?= 127.0.0.1:3000
RUN_DATA ?= data
run: install
	$(PY) -m orrery.quickstart --listen-addr $(RUN_ADDR) --data-dir $(RUN_DATA)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
