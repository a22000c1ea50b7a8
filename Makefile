# Two commands for a fresh machine with Python 3.11:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch that lies on this machine's disk; the project itself asks for a range.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[dev,opensmile,plots]'
	touch $@

demo: $(BIN)/.installed
	mkdir -p results
	$(BIN)/automl search --data synth-cry --space search_spaces/seed_gru.yaml --searcher reinforce \
		--trials 10 --epochs 5 --workers 2 --seed 0 --experiment demo --json results/demo.json

# The test of MLflow's UI drives Debian's Chromium, installed here when missing (as root).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

test: $(BIN)/.installed $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# what `make demo` wrote; the corpora and feature cache (~/.cache/automl, or $$AUTOML_CACHE) stay
clean:
	rm -rf $(VENV) mlflow.db mlflow.db.lock mlartifacts results automl-runs
