# The README's two commands:
#   make figures   regenerate every figure and the table (SCALE=ci by default)
#   make test      run every check: export drift, clean notebooks, notebook tests, pytest, ci-scale figures
# Both create and fill the virtual environment $(VENV) first.

PYTHON ?= python3
VENV   ?= .venv
# torch==2.13.0 resolves to a CPU build where one is offered locally; TORCH=torch takes the latest.
TORCH  ?= torch==2.13.0
SCALE  ?= ci
OUT    ?= figures
# Offline data sets (MNIST and CIFAR-10 subsets); torchvision's download path needs none of this.
export ADAM_IB_DATA ?= $(abspath ../shared/data)
export MPLBACKEND := Agg
export PYTHONWARNINGS ?= ignore::DeprecationWarning

PY  := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install readme figures test test-export test-clean test-nbs test-py test-figures benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: settings.ini setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)" -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import adam_implicit_bias, torch, nbdev, papermill"
	touch $@

# README.md is generated from nbs/index.ipynb (Quarto, which nbdev_readme needs, is not available everywhere).
readme: install
	$(BIN)/jupyter nbconvert --log-level=ERROR --to markdown --output-dir . --output README nbs/index.ipynb

figures: install
	$(BIN)/adam-ib reproduce --scale $(SCALE) --out $(OUT)

test: test-export test-clean test-nbs test-py test-figures
	@echo "make test: all checks passed"

# The library is generated from the notebooks: exporting again must change nothing.
test-export: readme
	$(BIN)/nbdev_export
	@git status --porcelain -- adam_implicit_bias README.md | grep . && { echo "adam_implicit_bias/ or README.md drifted from nbs/: edit the notebooks, run nbdev_export and make readme"; exit 1; } || echo "export: library and README match the notebooks"

# Notebooks are committed clean: no outputs, no execution counts, no stray metadata.
test-clean: install
	$(BIN)/nbdev_clean
	@git status --porcelain -- nbs | grep . && { echo "nbs/ is not clean: run nbdev_clean and commit"; exit 1; } || echo "clean: notebooks carry no outputs"

# The notebooks' own cells; cells flagged `#| slow` are experiments, left to papermill.
test-nbs: install
	$(BIN)/nbdev_test --n_workers 2 --timing

test-py: install
	$(PY) -m pytest -q tests

# Regenerate every figure and the table at ci scale into a temporary folder and check them.
test-figures: install
	@tmp=$$(mktemp -d) && $(BIN)/adam-ib reproduce --scale ci --out $$tmp && $(BIN)/adam-ib check $$tmp && rm -rf $$tmp

benchmark: install
	$(PY) benchmarks/fields_cost.py
	$(PY) benchmarks/trainer_speed.py
	$(PY) benchmarks/penalty_cost.py

clean:
	rm -rf executed results _proc _docs
