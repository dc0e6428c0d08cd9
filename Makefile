# mrepo: `make demo` runs the end-to-end demo, `make test` the whole test suite.
# Both create .venv when missing and install the project with its dev extras.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.mrepo-installed

.PHONY: install test test-all wheel-check demo bench lint browser clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, pinned: a looser spec would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the web-view test (Debian's package); skipped quietly where apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the web-view test will be skipped"; }

test: install browser
	$(PY) -m pytest -q -ra

# The package as a user installs it: build the wheel, install it with [all] into a fresh venv
# (torch==2.13.0 first), then mrepo serve + a page request + a clone (scripts/check_wheel.sh; ~2 min).
wheel-check:
	PYTHON=$(PYTHON) scripts/check_wheel.sh

# Includes tests marked slow (long benchmarks-like checks).
test-all: install browser
	$(PY) -m pytest -q -ra -m ''

demo: install
	$(PY) scripts/demo.py

# Quick sizes of every benchmark (benchmarks/README.md has the full-size commands).
bench: install
	$(PIP) install -e '.[bench]'
	$(PY) benchmarks/bench_transfer.py --quick
	$(PY) benchmarks/bench_commit_arrays.py --quick
	$(PY) benchmarks/bench_projection.py --boxes 64 --repeats 2 --threads 1
	$(PY) benchmarks/bench_collisions.py --items 200
	$(PY) benchmarks/bench_refine.py 8 16
	$(PY) benchmarks/bench_ray.py --quick
	$(PY) benchmarks/bench_server.py --seconds 2
	$(PY) benchmarks/bench_ablation.py --quick
	$(PY) benchmarks/bench_m_fidelity.py

lint: install
	$(VENV)/bin/ruff check mrepo tests benchmarks scripts

clean:
	rm -rf demo-out .pytest_cache
