# Two commands for a new machine with only Python and make: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv clean bench docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# make demo: create .venv, install the package, run the main job.
demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet .
	cd /tmp && $(CURDIR)/$(BIN)/sharedcompute demo

# make test: install the package (not editable) with the test and dask extras; run the whole suite
# against the installed copy (pytest runs from tests/ with --import-mode=importlib so the
# source tree's sharedcompute/ is never imported by accident). A fatal signal in pytest itself
# writes every thread's traceback to stderr and to a file under $TMPDIR (tests/conftest.py); if
# pytest dies, that file is printed again at the end, where a CI log is read.
test: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[test,dask]"
	log="$${TMPDIR:-/tmp}/sharedcompute-tests-$$$$-fatal.log"; \
	SHAREDCOMPUTE_TEST_FATAL_LOG="$$log" $(BIN)/pytest -p no:cacheprovider --import-mode=importlib -q tests; \
	rc=$$?; \
	if [ $$rc -gt 128 ]; then echo "make test: pytest was killed by signal $$((rc - 128))"; fi; \
	if [ -s "$$log" ]; then echo "make test: tracebacks of pytest's fatal signal ($$log):"; cat "$$log"; fi; \
	exit $$rc

bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[progress,plot]"
	$(BIN)/sharedcompute bench

# make docs: install the package with the docs extra; build the site into docs/_build/html with
# warnings as errors (the examples/ gallery runs at small sizes), then run every >>> example of
# the documented docstrings and of the user guide (sphinx doctest builder).
docs: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[docs]"
	cd docs && $(CURDIR)/$(BIN)/sphinx-build -E -b html -W --keep-going -q . _build/html
	cd docs && $(CURDIR)/$(BIN)/sphinx-build -E -b doctest -W --keep-going -q . _build/doctest
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) build *.egg-info
