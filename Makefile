# Two entry points for a fresh machine: `make demo` and `make test` (both install into .venv first).
# GPU=1 installs GPU faiss (ppvi[gpu]), GPU=0 faiss-cpu (ppvi[cpu]); by default GPU=1 when nvidia-smi
# sees a GPU. Switching reinstalls: the two faiss wheels write the same module, so both are removed first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
FAISS := $(if $(filter 1,$(GPU)),gpu,cpu)
STAMP := $(VENV)/.ppvi-installed-$(FAISS)
PIP := $(BIN)/pip --disable-pip-version-check
DEMO_OUT ?= demo_out

.PHONY: install demo test test-fast clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) uninstall --quiet --yes faiss-cpu faiss-gpu 2>/dev/null || true
	$(PIP) install --quiet -e '.[test,$(FAISS)]'
	rm -f $(VENV)/.ppvi-installed*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ppvi demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
