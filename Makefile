# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv and install assay with every extra the suite needs (torch pinned to the CPU 2.13.0 build).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.assay-installed
PIP     = $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install test test-fast fuzz lint lint-imports format demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[watermark,torch,onnx,mlflow,postgres,gates,dev]"
	touch $(STAMP)

install: $(STAMP)

lint: install lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## The layers contract (pyproject.toml [tool.importlinter]). grimp cannot walk the editable
## install's path hook, so it reads a staged `assay` tree of links to the package folders.
IMPORT_TREE = build/import-tree
lint-imports: install
	rm -rf $(IMPORT_TREE) && mkdir -p $(IMPORT_TREE)/assay
	for d in $$($(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['package-dir'].values())"); do \
		ln -s "$(CURDIR)/$$d" "$(IMPORT_TREE)/assay/$$d"; done
	PYTHONPATH=$(IMPORT_TREE) $(BIN)/lint-imports --no-cache

## The whole suite plus ruff and the layers contract (what CI runs), on two pytest-xdist workers
## (each with a PostgreSQL database of its own when ASSAY_TEST_PG_URL is set).
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS)

## Skip the tests marked slow.
test-fast: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "not slow"

## Property/fuzz tests of every parser of attacker files with many more examples (a few minutes).
FUZZ_TESTS = tests/watermark/test_fuzz_formats.py tests/watermark/test_formats_hardening.py \
	tests/integrity/test_fuzz_oms.py tests/incident/test_fuzz_playbooks.py
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -p no:cacheprovider $(FUZZ_TESTS)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## End-to-end demo in a throw-away ASSAY_HOME (.assay-demo/).
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash demo/demo.sh

## Benchmarks: results to benchmarks/results/*.json.
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .assay-demo .pytest_cache .ruff_cache build *.egg-info
