# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv if needed, installs, runs the main job
#   make test   -> creates .venv if needed, installs, runs the default test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch==2.13.0 is taken first (on machines that keep its CPU wheel on disk, pip's find-links
# serve it without a multi-GB CUDA download); anywhere it cannot be had, any torch>=2.3 will do.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-slow lint docs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)" || $(PY) -m pip install -q "torch>=2.3"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m ablations.run

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m "slow or thorough"

lint: $(VENV)/.installed
	$(PY) -m ruff check eqtheory ablations proofs_checks tests benchmarks

docs: $(VENV)/.installed
	$(PY) -m eqtheory.docs_table > docs/components.md

clean:
	rm -rf $(VENV)
