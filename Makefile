# wmtp_nb: every target sets itself up on a fresh machine (python3 >= 3.10, pip, no GPU needed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONUNBUFFERED := 1

.PHONY: install test sync nbtest pytest docs lab mlflow demo assets clean help

help:
	@echo "make test   - set up .venv, check notebooks/library sync, run nbdev_test, build docs, run pytest"
	@echo "make demo   - build micro models + embedded data, train all stages, evaluate, analyse (runs/)"
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

# Micro models (tokenizer + micro-mtp + micro-ref) under storage/models_v2/; skipped when built and verified.
assets: install
	$(BIN)/wmtp_build_micro
	$(BIN)/wmtp_prepare_data

# The embedded demo: every stage on the local-light preset (micro models, embedded verifiable MBPP data, CPU, one
# process) through papermill; executed notebooks, checkpoints, metrics, plots and the MLflow store land in runs/.
# Runs are resumable: re-running skips finished stages (delete runs/demo-* to train again).
PAPERMILL := $(PY) -m papermill --log-output -k python3
demo: assets
	@start=$$(date +%s); \
	$(PAPERMILL) nbs/train.ipynb runs/demo-critic.ipynb -p stage critic -p run_name demo-critic \
		-y "overrides: [training.max_steps=32, training.batch_size=4, data.n_samples=128]" && \
	$(PAPERMILL) nbs/train.ipynb runs/demo-verifiable.ipynb -p stage verifiable -p run_name demo-verifiable \
		-y "overrides: [models.init_from=demo-critic]" && \
	$(PAPERMILL) nbs/train.ipynb runs/demo-rho1.ipynb -p stage rho1 -p run_name demo-rho1 && \
	$(PAPERMILL) nbs/train.ipynb runs/demo-baseline.ipynb -p stage baseline -p run_name demo-baseline && \
	echo "demo: training (critic -> verifiable, rho1, baseline) done in $$(( $$(date +%s) - start ))s; see runs/demo-*"
	@start=$$(date +%s); \
	for r in baseline verifiable rho1; do \
		ref=""; [ $$r = rho1 ] && ref="-p reference_path storage/models_v2/micro-ref"; \
		$(PAPERMILL) nbs/evaluate.ipynb runs/demo-eval-$$r.ipynb -p model_path runs/demo-$$r \
			-p n 5 -p limit 20 -p max_new_tokens 128 -p ks 1,5 $$ref || exit 1; \
	done; \
	$(PAPERMILL) nbs/analysis_weights.ipynb runs/analysis_weights.ipynb && \
	$(PAPERMILL) nbs/analysis_passk.ipynb runs/analysis_passk.ipynb && \
	echo "demo: evaluation + analysis done in $$(( $$(date +%s) - start ))s; reports in runs/demo-*/eval, plots in runs/analysis"

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
