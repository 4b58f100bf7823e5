# `make run` trains the default experiment; `make test` runs the suite; `make docs` builds the site into site/.
# Both create .venv on first use and install the project into it (CPU torch, no CUDA packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
export PIP_CONSTRAINT := $(CURDIR)/constraints-cpu.txt

.PHONY: install run test test-slow benchmark docs clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[atari,video,envpool,export,test,bench,docs]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/lightrl fit --config experiments/ppo_cartpole.yaml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(ARGS)

benchmark: $(STAMP)
	$(BIN)/python experiments/benchmark.py $(ARGS)

# NO_MKDOCS_2_WARNING silences Material's banner about its successor; warnings still fail the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) lightning_logs wandb .pytest_cache site
