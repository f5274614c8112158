# The README's two commands:
#   make figures   regenerate every figure and the table (SCALE=ci by default)
#   make test      run every check: export drift, clean notebooks, notebook tests, pytest, ci-scale figures, the docs site
#   make docs      build the documentation site into _docs/ (docs-test checks it in headless Chromium)
# Each creates and fills the virtual environment $(VENV) first.

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

.PHONY: install readme figures test test-export test-clean test-nbs test-py test-figures docs docs-notebooks docs-test docs-screenshots chromium benchmark clean

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

# Each notebook runs once: the theory and library notebooks as nbdev_test runs them (docs-notebooks, kept for the docs), the
# experiment notebooks in full (test-figures); `make test-nbs` still runs nbdev_test over all of them.
test: test-export test-clean docs-notebooks test-py test-figures docs docs-test
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

# Regenerate every figure and the table at ci scale and check them. The executed notebooks and figures stay in executed/ci,
# stamped with the sources they were made from, so that `make docs` reuses them instead of running the experiments again.
test-figures: install
	rm -rf executed/ci
	$(BIN)/adam-ib reproduce --scale ci --out executed/ci/figures --executed executed/ci
	$(BIN)/adam-ib check executed/ci/figures
	$(PY) docs/build.py --scale ci --executed executed/ci --stamp

# The documentation site, in _docs/: every notebook with its outputs, figures and tables in place, and the API reference.
# The experiment notebooks come from executed/$(SCALE) when it was made from the current sources, else from adam-ib reproduce.
docs: install
	$(PY) docs/build.py --scale $(SCALE) --executed executed/$(SCALE) --out _docs

# The theory and library notebooks executed as nbdev_test runs them (#| slow cells skipped), stopping at the first error; the
# executed copies are cached in _proc/executed/ for `make docs`.
docs-notebooks: install
	$(PY) docs/build.py --notebooks-only

# Every page of _docs/ in headless Chromium (docs/check.py), after checking that the checker catches broken pages.
docs-test: install chromium
	$(PY) docs/check.py _docs --self-test

# The screenshots the README links to: Theorem 3.1 and Figure 2, from the built site.
docs-screenshots: install chromium
	$(PY) docs/check.py _docs --shot '02_adam_ode.html#theorem-3-1-the-modified-ode-of-full-batch-adam=docs/screenshots/02_adam_ode.png' \
	  --shot '06_toy.html#fig2=docs/screenshots/06_toy.png'

# Debian's Chromium and its driver, installed through apt where they are missing (as root, as in CI).
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "docs-test needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

benchmark: install
	$(PY) benchmarks/fields_cost.py
	$(PY) benchmarks/trainer_speed.py
	$(PY) benchmarks/penalty_cost.py

clean:
	rm -rf executed results _proc _docs
