# wmtp_nb: every target sets itself up on a fresh machine (python3 >= 3.10, pip, no GPU needed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONUNBUFFERED := 1

.PHONY: install test sync nbtest pytest docs lab mlflow demo figures assets assets-synthetic clean help

help:
	@echo "make test   - set up .venv, check notebooks/library sync, run nbdev_test, build docs, run pytest"
	@echo "make demo   - the CPU-scale synthetic benchmark: pretrain a base, 3 experiments x 3 seeds, evaluate, analyse (runs/)"
	@echo "make figures - copy the demo's plots into nbs/images/ for the docs pages (after make demo)"
	@echo "make docs   - build the docs site offline into _docs/"
	@echo "make lab    - JupyterLab on 127.0.0.1 with the project's environment (LAB_PORT=8888; root too)"
	@echo "make mlflow - MLflow UI over runs/mlflow.db on http://127.0.0.1:5000 (MLFLOW_PORT=5000)"

# (Re)create the virtual environment when the dependency list changes.
$(STAMP): settings.ini setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# Library and notebooks in sync, notebooks clean (checked in a scratch copy: the working tree is never touched).
sync: install
	$(PY) tools/check_sync.py

nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	$(PY) -m pytest -q

docs: install
	$(PY) tools/build_docs.py

test: install
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory sync && \
	$(MAKE) --no-print-directory nbtest && \
	$(MAKE) --no-print-directory docs && \
	$(MAKE) --no-print-directory pytest && \
	echo "make test: all passed in $$(( $$(date +%s) - start ))s"

# Micro models (tokenizer + micro-mtp + micro-ref) under storage/models_v2/, the embedded datasets, and the synthetic
# benchmark's random base model (synth-mtp: its own tokenizer, trained on synthetic-verifiable); each piece is
# skipped when built and verified.
assets: install
	$(BIN)/wmtp_build_micro
	$(BIN)/wmtp_prepare_data
	$(BIN)/wmtp_build_synthetic_base

# What the demo needs: synthetic-verifiable (generated tasks, every record confirmed in the sandbox) and synth-mtp.
assets-synthetic: install
	$(BIN)/wmtp_prepare_data --only synthetic-verifiable
	$(BIN)/wmtp_build_synthetic_base

# The embedded demo: the CPU-scale synthetic benchmark (issue 14). Pretrain a micro MTP base model on the correct
# training solutions, fine-tune the three experiments from it (critic -> verifiable, rho1 with the base as reference,
# baseline) with 3 seeds each, evaluate base and experiments on the held-out test tasks (n = 10 samples per task),
# then the analysis notebooks (Pass@K with CIs over tasks and seeds, the bug-token credit score); everything through
# papermill (tools/demo.py), executed notebooks, checkpoints, MLflow store, plots and the report in runs/. Runs are
# resumable: re-running skips finished steps (delete runs/synth-* to train again). DEMO_ARGS="--jobs 2" trains two
# seeds at a time (one thread each) on an otherwise idle machine.
DEMO_ARGS ?=
demo: assets-synthetic
	$(PY) tools/demo.py $(DEMO_ARGS)

# The demo's plots for the docs site (nbs/images/, each at most 200 KB): train, analysis_weights, analysis_passk.
figures: install
	$(PY) tools/figures.py

# JupyterLab on 127.0.0.1 with this .venv as the `python3` kernel; it prints the URL with its token. As root (a
# container, a cluster node) it passes --allow-root, which Jupyter otherwise refuses; as a user it does not.
LAB_PORT ?= 8888
lab: install
	exec $(BIN)/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) --no-browser --ServerApp.root_dir=nbs \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root)

# The MLflow UI (and REST API) over the store that training and evaluation log to by default: runs/mlflow.db, with
# artifacts in runs/mlartifacts/ (WMTP_RUNS moves both, as it does for the library). One worker and no job runner
# (MLflow's GenAI job queue: eight more processes) keep it light. A cluster shares a tracking server instead
# (MLFLOW_TRACKING_URI=http://host:5000).
WMTP_RUNS ?= runs
MLFLOW_PORT ?= 5000
mlflow: install
	@mkdir -p $(WMTP_RUNS)
	@echo "MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) over sqlite:///$(abspath $(WMTP_RUNS))/mlflow.db (Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec $(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
		--backend-store-uri sqlite:///$(abspath $(WMTP_RUNS))/mlflow.db --default-artifact-root $(abspath $(WMTP_RUNS))/mlartifacts

clean:
	rm -rf _docs _proc .pytest_cache .hypothesis

# deploy/requirements.lock: settings.ini's requirements pinned to this environment's versions (the container image).
.PHONY: lock
lock: install
	$(PY) tools/make_lock.py
