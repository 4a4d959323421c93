# make test: set up .venv (torch CPU wheel + the package) and the slurm profile, run the test suite.
# make demo: set up, then run the demo grid (config/demo.yaml) on this machine: MNIST from
#            $AFL_DATA_ROOT (else downloaded into ./data), figures in results/figures/, report in
#            results/report.html.
# make docs-figures: set up, then run config/docs.yaml (every figure of docs/figures, results in
#            results/docs/) and copy its figures into docs/figures/.
# make profile: install the Snakemake profile `slurm` (cluster/profiles/slurm) for this user.
# make lint: `snakemake --lint` with every workflow config (and the slurm executor's rules) and `snakefmt --check`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Where Snakemake finds `--profile NAME`: the user's Snakemake config folder.
PROFILE_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
DEMO := --profile cluster/profiles/local --configfile config/demo.yaml

.PHONY: setup profile test lint demo docs-figures clean

setup: $(VENV)/.installed profile

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

profile: $(PROFILE_DIR)/slurm/config.yaml

# Never overwrite someone else's `slurm` profile: ours starts with the line "# afl slurm profile".
$(PROFILE_DIR)/slurm/config.yaml: cluster/profiles/slurm/config.yaml
	@if [ -e $@ ] && ! head -n 1 $@ | grep -q '^# afl slurm profile'; then \
		echo "$@ exists and is not afl's: move it away, or run make profile PROFILE_DIR=..." >&2; exit 1; fi
	mkdir -p $(@D)
	cp $< $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	for config in config/demo.yaml config/paper.yaml config/docs.yaml config/cifar10.yaml; do \
		$(VENV)/bin/snakemake --lint --configfile $$config || exit 1; done
	$(VENV)/bin/snakemake --lint --configfile config/paper.yaml --config executor=slurm
	$(VENV)/bin/snakefmt --check Snakefile workflow/

demo: setup
	$(VENV)/bin/afl data download mnist --quiet
	$(VENV)/bin/snakemake all $(DEMO)
	$(VENV)/bin/snakemake all $(DEMO) --report results/report.html

docs-figures: setup
	$(VENV)/bin/afl data download mnist --quiet
	$(VENV)/bin/snakemake all --profile cluster/profiles/local --configfile config/docs.yaml
	cp results/docs/figures/*.png docs/figures/

clean:
	rm -rf $(VENV) results .pytest_cache .snakemake
