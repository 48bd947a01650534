# `make demo`: set up .venv and run the main job; `make test`: set up .venv and run the tests.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: demo test
demo: $(VENV)/.installed
	$(PYTHON) -m monet_utils run

test: $(VENV)/.installed
	$(PYTHON) -m pytest -q

$(VENV)/.installed: requirements.txt requirements-fid.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-fid.txt
	touch $@
