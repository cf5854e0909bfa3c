# batlit — common tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help install test test-all mutants quickstart bench speedup gpu-wheels clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: ## create $(VENV) and install batlit with its dev extras (editable)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"

test: ## fast test suite (skips tests marked slow); under 10 minutes on 2 cores
	$(BIN)/python -m pytest -m "not slow" -q --durations=15

test-all: ## every test, slow ones included
	$(BIN)/python -m pytest -q

mutants: ## mutation check: each one-line mistake listed in scripts/mutants.py must fail its tests (docs/testing.md)
	$(BIN)/python scripts/mutants.py $(MUTANTS_ARGS)

quickstart: ## the README's first run: PGD-AT on the bundled digits, per-class table
	$(BIN)/python -m batlit.train experiment=quickstart

bench: ## training-step benchmark, default fast path beside fp32 contiguous unfolded (small CNN width 16, ResNet-18; batch 128) into outputs/bench/
	$(BIN)/python -m batlit.bench model=small_cnn model.width=16 batch_size=128 repeats=5 'methods=[standard,pgd_at,trades,bat]' baseline=true profile=true count_flops=false out=outputs/bench/small_cnn16_b128.json
	$(BIN)/python -m batlit.bench model=resnet18 batch_size=128 repeats=3 'methods=[pgd_at]' baseline=true profile=true count_flops=false out=outputs/bench/resnet18_b128.json
	$(BIN)/python -m batlit.tools.precision_check --out outputs/bench/precision_check.json

speedup: ## the fast path's median speed-up over fp32 (unfolded, contiguous), 5 fresh bench processes (small CNN width 16) into outputs/bench/
	$(BIN)/python scripts/speedup_rounds.py --rounds 5 --out outputs/bench/speedup_rounds_small_cnn16.json model=small_cnn model.width=16 'methods=[standard,pgd_at,trades,bat]'

# What a bare GPU machine lacks for scripts/gpu_slot.sh (its image has torch, lightning, torchmetrics,
# numpy, pillow, matplotlib, pyyaml): each pinned, without dependencies (torchattacks pins an old
# requests that the image's newer one would have to replace), pyautoattack without its 42 MB examples.
GPU_WHEELS ?= hydra-core==1.3.8 omegaconf==2.3.1 torchattacks==3.5.1 pyautoattack==0.2.0
GPU_SDISTS ?= antlr4-python3-runtime==4.9.3

gpu-wheels: ## the wheels a GPU slot installs (--no-deps, pure Python; batlit's own too) into .wheels/, under 1 MiB (docs/performance.md)
	rm -rf .wheels && mkdir -p .wheels
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: -d .wheels $(GPU_WHEELS)
	$(BIN)/python -m pip wheel -q --no-deps -w .wheels $(GPU_SDISTS) .
	$(BIN)/python scripts/slim_wheel.py .wheels/pyautoattack-*.whl --drop pyautoattack/examples/
	@ls -l .wheels && du -cb .wheels/*.whl | tail -n 1

clean: ## remove caches and run outputs (keeps $(VENV))
	rm -rf outputs multirun .pytest_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
