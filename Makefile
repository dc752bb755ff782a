# make demo: set up .venv and run the whole workflow on the synthetic demo dataset.
# make test: set up .venv and run the test suite.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
# The workflow's rules call the `unetseg` command of the environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test report lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1 --configfile config/demo.yaml
	$(BIN)/snakemake --configfile config/demo.yaml --report results/demo/report.html
	@echo "Done: results/demo/evaluation/summary.json, results/demo/masks/, results/demo/report.html"

test: lint
	$(BIN)/python -m pytest

# Python (ruff), Snakefiles (snakefmt) and the workflow (snakemake --lint); `make test` runs it.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

clean:
	rm -rf results/demo resources/demo logs/demo .snakemake
