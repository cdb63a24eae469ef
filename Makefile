# `make demo` and `make test` set everything up on a fresh machine (a .venv here), then run.
# Set-up runs again only when pyproject.toml or constraints.txt changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mmkit-installed
# JupyterLab refuses to run as root unless asked (--allow-root); a user needs no flag.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
PORT   ?= 8866

.PHONY: install demo test lab explorer bench clean

# pyproject.toml states ranges; constraints.txt the exact versions tested (torch 2.13.0, the
# CPU build here: an unpinned torch pulls GBs of CUDA packages). The extras add the browser
# test's Playwright, JupyterLab (`make lab`) and Voila (`make explorer`).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  -c constraints.txt -e ".[test,browser]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m mmkit sweep --model-mb 16 --out results

# Lint and format first (seconds), then the suite.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lab: install
	$(BIN)/jupyter lab $(ALLOW_ROOT) notebooks/

# The hint explorer alone, as a web page on this machine (http://localhost:$(PORT)).
explorer: install
	$(BIN)/voila --no-browser --port=$(PORT) --Voila.ip=127.0.0.1 notebooks/explorer_app.ipynb

bench: install
	$(BIN)/python bench/tracing_overhead.py

clean:
	rm -rf $(VENV) results .pytest_cache
