# Set-up and checks for this machine. `make setup` is idempotent: stamps make a second run return in seconds.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# This machine serves these two releases from its own disk; pyproject.toml only asks for compatible ranges.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
# TorchCodec's JPEG decoders (libjpeg-turbo, nvjpeg) for the GPU input pipeline; this release imports
# and decodes with torch 2.14.1 here.
CODEC_PIN := torchcodec==0.17.0
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup test test-fast test-hydra14 install-check demo mini-study mini-study-4ep mini-study-adaptive lint data slurm-up slurm-down clean

setup: $(VENV)/.stamp-deps data $(VENV)-hydra14/.stamp

$(VENV)/.stamp-torch:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q $(TORCH_PIN)
	touch $@

$(VENV)/.stamp-deps: $(VENV)/.stamp-torch pyproject.toml
	$(PIP) install -q -e '.[dev,gpu]' $(CODEC_PIN)
	touch $@

# Hydra 1.4 (release candidates) beside Hydra 1.3: .venv-hydra14 links .venv's packages and installs
# only Hydra, omegaconf and Hydra's launcher plugins at 1.4; scripts/run-tests.sh runs the Hydra-facing
# tests in it too.
$(VENV)-hydra14/.stamp: $(VENV)/.stamp-deps scripts/hydra14-env.sh
	bash scripts/hydra14-env.sh
	touch $@

# The embedded default dataset: Debian's Fashion-MNIST package (real images, MIT licence).
data:
	@test -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz || { \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }); }

test: setup
	bash scripts/run-tests.sh

# Only the Hydra-facing tests, in the Hydra 1.4 environment (with a local SLURM cluster, as make test).
test-hydra14: setup
	STEMSWEEP_HYDRA14=only bash scripts/run-tests.sh

# The inner loop (under 3 minutes on 2 cores): every test but the real-SLURM ones and those that train
# in processes of their own; `make test` runs them all.
test-fast: setup
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not slurm and not processes" --durations=12

# A cluster without root (docs/cluster.md): `pip install -e '.[notebook]'` into a fresh venv with no system
# site packages, torch from pip, no embedded data set; then a plan for SLURM, a small synthetic sweep, the
# report and a notebook on the committed records (scripts/install-check.sh; about 3 minutes, 7 GB of disk
# while it runs). Outside the pytest budget: .ci/run runs it after `make test`.
install-check:
	bash scripts/install-check.sh "$(TORCH_PIN)"

demo: setup
	$(PY) -m stemsweep.run

# The mini study on this machine (about 2 hours on 2 cores; studies/mini.yaml): tune, every mini sweep,
# the report in docs/mini-study/. Resumable: run it again after an interruption.
mini-study: setup
	$(VENV)/bin/stemsweep study run mini

# The fairer check of the two ViTs (about 1 hour on 2 cores): lr/wd tuned on 4-epoch runs instead of
# 1-epoch ones, then the training-length, optimizer and peak runs again; report in docs/mini-study-4ep/
# (studies/mini4.yaml).
mini-study-4ep: setup
	$(VENV)/bin/stemsweep study run mini4

# The mini study's questions asked adaptively (at most about 50 minutes on 2 cores; studies/mini_adaptive.yaml):
# lr/wd in waves of 8 draws, the seed questions in waves of 2 seeds, each stopped once settled; report in
# docs/mini-adaptive/.
mini-study-adaptive: setup
	$(VENV)/bin/stemsweep study run mini_adaptive

# ruff, and the layers of docs/design.md (import-linter: pyproject.toml's [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports --no-cache

slurm-up:
	bash scripts/local-slurm.sh up

slurm-down:
	bash scripts/local-slurm.sh down

clean:
	rm -rf runs outputs multirun .pytest_cache .venv-hydra14
