# The two commands of the contract: `make bench` (the main job) and `make test`.
# Both set up .venv from constraints.txt (the exact tested environment) when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: bench test test-slow bench-ci lint venv clean studies

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

# The main job: train the reference VAE on mnist5k, evaluate it, write sample grids, log to ./mlruns.
bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/vaezoo bench main

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=15 tests

# The slow tests include a study on a local Ray cluster: Ray (the optional extra) is installed for them.
RAY_STAMP := $(VENV)/.ray-installed
$(RAY_STAMP): $(STAMP) constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[ray]'
	touch $(RAY_STAMP)

test-slow: $(STAMP) $(RAY_STAMP)
	$(PY) -m pytest -q -m slow tests

# The pytest-benchmark suite (benchmarks/, not part of `make test`), then the check of its speed ratios
# (paired benchmarks measured in this same run; absolute times are never compared).
BENCH_JSON := .benchmarks/ci.json
# BackPACK (the moments benchmark's baseline) without its torchvision requirement: PyPI's torchvision 0.28.0
# is the CUDA 13 build, whose _C fails to load beside the CPU torch; BackPACK uses it only in its examples.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) constraints.txt
	$(PY) -m pip install -q --no-deps -c constraints.txt backpack-for-pytorch einops unfoldNd
	touch $(BENCH_STAMP)

bench-ci: $(STAMP) $(BENCH_STAMP)
	mkdir -p $(dir $(BENCH_JSON))
	$(PY) -m pytest -q -m "not slow" benchmarks --benchmark-json=$(BENCH_JSON) --benchmark-columns=median,iqr,rounds
	$(PY) benchmarks/check_ratios.py $(BENCH_JSON)

# The reproduction studies' quick reports, committed in docs/studies/NAME/ (report.md, study.json, small PNGs);
# the trained models' run folders go to runs/studies/ (not committed). STUDIES=name picks some.
STUDIES ?= prior-sampling kl-direction samples-per-z organisation beta-sweep rainforth-snr dreg-gain interpolation kl-pull burda-table1 batch-size
studies: $(STAMP)
	for s in $(STUDIES); do \
	  $(VENV)/bin/vaezoo study $$s --quick --out docs/studies/$$s --runs-dir runs/studies --no-track || exit 1; \
	done

lint: $(STAMP)
	$(VENV)/bin/ruff check vaezoo exporters tests benchmarks

clean:
	rm -rf runs mlruns .pytest_cache
