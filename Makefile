# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing (scripts/install.sh, pinned by constraints.txt).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint install install-base clean

demo: install  # the same environment as `make test` (torch comes from local disk); then the whole pipeline
	$(VENV)/bin/edgevision demo

install:
	scripts/install.sh $(VENV) dev,train,libreyolo,plots,onnxruntime,serve,inspect,line,scale

test: install  # the whole suite (trained models built once per run, cached in .test-cache/)
	scripts/test.sh $(PY)

test-fast:  # the edit-run tier: no training, no installs, nothing marked slow (needs the venv `make test` made)
	@[ -x $(PY) ] || { echo "make test-fast: no $(VENV); run 'make test' (or scripts/install.sh) once first" >&2; exit 2; }
	scripts/test.sh --fast $(PY)

lint: install
	$(VENV)/bin/ruff check edgevision tests benchmarks
	$(VENV)/bin/mypy edgevision/core edgevision/serve edgevision/bench edgevision/reliability edgevision/inspect edgevision/commands edgevision/line edgevision/scale

clean:
	rm -rf edgevision-demo .pytest_cache .ruff_cache .hypothesis .test-cache
