# The README contract: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
CONFIG ?= config/config.yaml
STAMP  := $(VENV)/.installed

.PHONY: install browser run report test test-cluster lint unit bench compare clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the default study on the embedded data; ends with its three main findings and the report's path
run: install
	@# The study file first, read strictly: a YAML mistake gets its line and column (Snakemake's reader gives neither)
	@$(BIN)/python -m ablation_lab check $(CONFIG) >/dev/null
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report $(dir $(shell $(BIN)/python -m ablation_lab report-path $(CONFIG)))snakemake-report.html
	@$(BIN)/python -m ablation_lab findings $(CONFIG)
	@echo "HTML report: $$($(BIN)/python -m ablation_lab report-path $(CONFIG))"

## test: lint, then the whole test suite (it runs the workflow on config/test.yaml and opens its report in Chromium)
test: install browser lint
	$(BIN)/python -m pytest -q --durations=15

## browser: headless Chromium and its driver for tests/test_browser.py; installed only when missing (Debian, as root on CI)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

## test-cluster: as root on Debian, start a one-node SLURM cluster, run the study through
## profiles/slurm, compare with a local run, stop the cluster (tests/test_cluster.py);
## -rA prints the sbatch job ids and failure reports the tests saw
test-cluster: install
	$(BIN)/python -m pytest -q -rA -m cluster tests/test_cluster.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile config/test.yaml

## unit: the quick loop: every test but the workflow (and browser), runtime and cluster ones (no Snakemake run, no Chromium),
## spread over two pytest-xdist processes (UNIT_WORKERS=0 runs them in this one)
UNIT_WORKERS ?= 2
unit: install
	$(BIN)/python -m pytest -q -n $(UNIT_WORKERS) -m "not workflow and not runtime and not cluster" --durations=15

## compare: two studies side by side (each one run first, from its cache when it has run):
## make compare A=config/a.yaml B=config/b.yaml writes reports/compare/<a>--<b>/compare.html and .csv
compare: install
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make compare A=<study-a.yaml> B=<study-b.yaml>"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) --configfile $(A)
	$(BIN)/snakemake --cores $(CORES) --configfile $(B)
	$(BIN)/python -m ablation_lab compare $(A) $(B)

## bench: speed benchmarks, printing ratios (see benchmarks/README.md)
bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf results logs .snakemake reports/*/
