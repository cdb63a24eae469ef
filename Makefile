# `make demo` and `make test` set everything up on a fresh machine (a .venv here), then run.
# Set-up runs again only when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mmkit-installed

.PHONY: install demo test lab bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned exactly (2.13.0, CPU build): anything looser pulls GBs of CUDA packages.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m mmkit sweep --model-mb 16 --out results

test: install
	$(BIN)/python -m pytest

lab: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[lab]"
	$(BIN)/jupyter lab notebooks/

bench: install
	$(BIN)/python bench/tracing_overhead.py

clean:
	rm -rf $(VENV) results .pytest_cache
