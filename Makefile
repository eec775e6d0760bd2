# Everything the project needs is installed from this file and pyproject.toml.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv dev quickstart test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime install (the main job). Done once per pyproject.toml (a stamp file): a second
# `make quickstart` prints only the run's result.
venv: $(VENV)/.runtime-installed
$(VENV)/.runtime-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Runtime + PyTorch references + test tools + the ONNX converter and runtime (export) + the
# Weights & Biases writer (wandb) + the
# compilers for H100/TPU without the device (fgvc_jax.aot, its tests run in CI). torch first,
# alone, so that pip takes the CPU 2.13.0 build and no CUDA packages.
dev: $(VENV)/.dev-installed
$(VENV)/.dev-installed: pyproject.toml $(VENV)/aot-gpu/.installed $(VENV)/aot-tpu/.installed
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[torch,test,export,wandb]"
	touch $@ $(VENV)/.runtime-installed

# The aot-gpu and aot-tpu extras of pyproject.toml, installed beside site-packages
# (fgvc_jax.aot puts the one its target needs on sys.path): inside site-packages the CUDA
# plugin, or libtpu, makes every CPU-only `import jax` print its failed initialisation.
$(VENV)/aot-%/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade --no-deps --target $(VENV)/aot-$* $$($(BIN)/python -c \
	  "import tomllib; t = tomllib.load(open('pyproject.toml', 'rb')); \
	  print(' '.join(t['project']['optional-dependencies']['aot-$*']))")
	touch $@

# The whole suite (CI): lint, then every test.
test: dev lint
	$(BIN)/python -m pytest -q -n 2 --maxschedchunk 1 --durations=60 tests

# The unit tier to run while working (<= 5 min on 2 cores): the tests not marked slow, aot or
# long (tests/conftest.py says which are long).
test-fast: dev lint
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not aot and not long" tests

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: dev
	$(BIN)/python bench/backbones.py

clean:
	rm -rf $(VENV) build *.egg-info

# The main job: CPU-sized SwinFC on the embedded synthetic_fgvc dataset (minutes on 2 cores).
# A finished run (its eval.json written) is not trained or evaluated again: its result is
# printed with how to start a new one. An interrupted one resumes.
QUICKSTART ?= runs/quickstart
quickstart: venv
	@if [ -f $(QUICKSTART)/eval.json ]; then \
	  $(BIN)/python -m fgvc_jax.run.summary $(QUICKSTART) make quickstart QUICKSTART=runs/quickstart_2; \
	else \
	  $(BIN)/python -m fgvc_jax.main --config configs/swinfc.py:synthetic --workdir $(QUICKSTART); \
	fi

# Debian's slurm-wlm (22.05 on bookworm) and munge, as root: tests/train/test_slurm_cluster.py
# starts a private one-node SLURM with them (tests/slurm_cluster.sh) and is skipped without
# them; `make test` does not install them. Their system services are not needed.
.PHONY: slurm
slurm:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
