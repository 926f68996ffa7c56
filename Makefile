# Two commands for a new machine with only Python and make: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# make demo: create .venv, install the package, run the main job.
demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet .
	cd /tmp && $(CURDIR)/$(BIN)/sharedcompute demo

# make test: install the package (not editable) with the test and dask extras; run the whole suite
# against the installed copy (pytest runs from tests/ with --import-mode=importlib so the
# source tree's sharedcompute/ is never imported by accident).
test: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[test,dask]"
	$(BIN)/pytest -p no:cacheprovider --import-mode=importlib -q tests

bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[progress,plot]"
	$(BIN)/sharedcompute bench

clean:
	rm -rf $(VENV) build *.egg-info
