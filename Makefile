# `make run` trains the default experiment; `make test` runs the suite; `make docs` builds the site into site/.
# Both create .venv on first use and install the project into it (CPU torch, no CUDA packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
export PIP_CONSTRAINT := $(CURDIR)/constraints-cpu.txt

LOWEST := .venv-lowest
# The smoke subset run on the lowest declared versions: each algorithm trains (PPO and A2C save and load,
# DQN, SAC and TD3 train twice to identical weights), exact resume (PPO, DQN with its replay buffer),
# 2-process DDP (PPO, DQN), the CLI with W&B offline, and the private fast paths against their fallbacks.
# Test ids, not a marker: a renamed test makes pytest exit 4 (not found) and the target fail, where an
# empty marker selection would exit 5.
SMOKE_TESTS := tests/test_algos.py::test_save_load_round_trip \
	tests/test_off_policy.py::test_same_seed_gives_identical_parameters \
	tests/test_resume.py::test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one \
	tests/test_ddp.py::test_ppo_ddp_two_processes tests/test_ddp.py::test_dqn_ddp_two_processes \
	tests/test_cli.py::test_fit_then_validate_test_predict_and_evaluate_the_checkpoint tests/test_wandb.py::test_fit_writes_offline_run_with_logged_metrics \
	tests/test_compat.py

.PHONY: install install-lowest run test test-lowest test-slow benchmark docs clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[atari,mujoco,video,envpool,export,test,bench,docs,tune]"
	touch $(STAMP)

install: $(STAMP)

# The lowest versions pyproject.toml declares (constraints-lowest.txt), in a venv of their own.
$(LOWEST)/.installed: pyproject.toml constraints-lowest.txt
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/constraints-lowest.txt $(LOWEST)/bin/python -m pip install --quiet -e ".[test]"
	touch $@

install-lowest: $(LOWEST)/.installed

run: $(STAMP)
	$(BIN)/lightrl fit --config experiments/ppo_cartpole.yaml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# PYTHONPATH: the editable install of either venv may point at another checkout of lightrl.
test-lowest: $(LOWEST)/.installed
	PYTHONPATH=$(CURDIR) $(LOWEST)/bin/python -m pytest -p no:cacheprovider $(SMOKE_TESTS) $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(ARGS)

benchmark: $(STAMP)
	$(BIN)/python experiments/benchmark.py $(ARGS)

# NO_MKDOCS_2_WARNING silences Material's banner about its successor; warnings still fail the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(LOWEST) lightning_logs wandb .pytest_cache site
