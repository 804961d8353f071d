# detkit developer targets. `make demo` and `make test` install what they need themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

.PHONY: setup test test-fast demo bench bench-quick clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[cpu,test,export]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow"

demo: $(STAMP)
	$(MAKE) -f examples/demo.mk PATH="$(CURDIR)/$(BIN):$$PATH"

# every benchmark at full size (about 40 minutes on 2 cores: the training ones dominate)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# the same benchmarks on small workloads (a few minutes; ratios are indicative only)
bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --quick

clean:
	rm -rf demo bench-out runs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
