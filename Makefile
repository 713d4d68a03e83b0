# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip --disable-pip-version-check -q
# extras installed with the project; CI adds `pose` (MediaPipe, about 1.1 GB) so the keypoint estimator is tested
EXTRAS ?= dev

.PHONY: setup demo reference reference-reid test test-fast lint docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing virtual-market into $(VENV) (first run takes a few minutes)"
	$(PIP) install -e '.[$(EXTRAS)]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -W ignore -c "import generator, augment, reid, torch, torchvision, torchreid, faiss"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vmarket pipeline configs/demo/pipeline.yaml

# the shipped reference generator (48 channels, 100 labelled + 1,000 unlabelled people): about 2 hours on 2 CPU
# cores (minutes on a GPU); rerun after a kill to resume
reference: $(STAMP)
	$(VENV)/bin/vmarket reference configs/reference/reference-48-unlabelled.yaml

# the reference re-ID ablation of the shipped generator (recipes x worlds x regimes x seeds); hours on 2 CPU cores;
# rerun after a kill to resume. Ships reid/reference/48ch/ablation.{csv,md}, provenance.json and docs/reid_48ch_*.png
# (configs/reference/reid.yaml is the table of the 32-channel generator shipped before, reid/reference/)
reference-reid: $(STAMP)
	$(VENV)/bin/vmarket reference-reid configs/reference/reid-48.yaml --package

# docs/cli.md from the vmarket parser, and docs/results.md's tables from the shipped ablations (a test fails when
# either is stale)
docs: $(STAMP)
	$(PY) -m augment.cli.reference_doc
	$(PY) -m augment.jobs.ablation_tables

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# every test, the `slow` tier included (end to end, kill-and-resume, DDP): what CI runs, under 8 minutes on 2 cores;
# the 15 slowest are listed at the end, to see which one nears that bound
test: $(STAMP)
	$(PY) -m pytest -q --durations=15

# the fast tier (-m "not slow"): under 3 minutes on 2 idle cores; the tiers are defined in pyproject.toml
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_stage1.py
	$(PY) benchmarks/bench_reid.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
