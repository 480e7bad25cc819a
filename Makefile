# SpotOn — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1

.PHONY: demo test venv lint bench stack stack-down clean

$(VENV)/.stamp: pyproject.toml scripts/bootstrap.sh $(wildcard spoton/native/*.cpp)
	./scripts/bootstrap.sh

venv: $(VENV)/.stamp

demo: venv
	$(PY) -m spoton.cli demo

test: venv
	./scripts/test.sh

lint: venv
	$(VENV)/bin/ruff check spoton tasks flows api deployments tests bench scripts
	$(VENV)/bin/mypy spoton

bench: venv
	$(PY) bench/pipeline.py

stack: venv
	$(PY) -m deployments.stack up

stack-down:
	$(PY) -m deployments.stack down

clean:
	rm -rf runs out .cache
