# Every target builds its own virtual environment, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BASE   := $(VENV)/.installed-base

.PHONY: demo test bench fuzz fuzz-engine dask-suite lint format clean browser docs

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# the demo needs only the package; tests and benchmarks install their extras
$(BASE): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $(BASE)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench,docs]'
	touch $(STAMP) $(BASE)

demo: $(BASE)
	$(VENV)/bin/layerflow run examples/hybrid.yaml

# The HTML report is checked in headless Chromium (Debian's package; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "note: chromium is missing and this is not root; the report's browser tests will skip (sudo apt-get install chromium)"; \
		fi; }

test: $(STAMP) browser
	$(PY) -m pytest -q

# The loader against 20,000 mutated pipelines (make test runs 500); a new seed each time,
# printed with any failure so that it can be replayed: make fuzz SEED=...
SEED ?= $(shell date +%s)
fuzz: $(STAMP)
	LAYERFLOW_FUZZ_CASES=20000 LAYERFLOW_FUZZ_SEED=$(SEED) $(PY) -m pytest -q tests/test_fuzz_pipeline.py

# The engine against its reference model (tests/test_engine_model.py; make test runs about 50
# cases): CASES per family (fewer on processes and Dask), a new seed each time, printed with
# any failure; REPLAY=family:seed reruns exactly one case.
CASES ?= 2000
REPLAY ?=
fuzz-engine: $(STAMP)
	LAYERFLOW_ENGINE_CASES=$(CASES) LAYERFLOW_ENGINE_SEED=$(SEED) LAYERFLOW_ENGINE_REPLAY=$(REPLAY) \
		$(PY) -m pytest -q -p no:randomly -p no:cacheprovider tests/test_engine_model.py

# Dask's own scheduler tests (from the installed wheel) on lf.dask.get and on stock Dask;
# not part of make test (minutes of dataframe and array tests)
dask-suite: $(STAMP)
	$(PY) bench/dask_suite.py --show-failures

bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/makespan.py
	$(PY) bench/store_cost.py
	$(PY) bench/fanout.py
	$(PY) bench/workflows.py
	$(PY) bench/plan.py
	$(PY) bench/backends.py
	$(PY) bench/rate_limits.py
	$(PY) bench/dask_backend.py
	$(PY) bench/dask_get.py
	$(PY) bench/dask_memory.py

# ruff, then mypy over src/layerflow (configured in pyproject.toml's [tool.mypy])
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

# The documentation site (docs/, mkdocs with the Material theme; the API reference is read
# from the docstrings): built offline, and a broken link or reference fails the build
docs: $(STAMP)
	sed 's#](docs/#](#g' README.md > docs/index.md  # the site's home page is the README
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench examples
	$(VENV)/bin/ruff check --fix src tests bench examples

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist site
