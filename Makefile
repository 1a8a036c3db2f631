# One command each: `make demo` (set up, then the whole CoCon story on the synthetic dataset)
# and `make test` (set up, then the linter and the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install test test-fast lint demo bench clean-venv

# requirements-mediapipe.txt is installed without dependencies: see the file for why.
$(VENV)/.installed: requirements.txt requirements-mediapipe.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-mediapipe.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

test: lint
	$(PY) -m pytest -q

# The edit-test loop: the suite without the end-to-end CLI runs marked slow.
test-fast: lint
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) bench/bench_preprocess.py
	$(PY) bench/bench_train.py

clean-venv:
	rm -rf $(VENV)
