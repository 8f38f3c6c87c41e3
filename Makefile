# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing (scripts/install.sh, pinned by constraints.txt).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint install install-base clean

demo: install  # the same environment as `make test` (torch comes from local disk); then the whole pipeline
	$(VENV)/bin/edgevision demo

install:
	scripts/install.sh $(VENV) dev,train,plots,onnxruntime,serve,inspect

test: install
	scripts/test.sh $(PY)

lint: install
	$(VENV)/bin/ruff check edgevision tests benchmarks
	$(VENV)/bin/mypy edgevision/core edgevision/serve edgevision/bench edgevision/reliability edgevision/inspect edgevision/commands

clean:
	rm -rf edgevision-demo .pytest_cache .ruff_cache .hypothesis
