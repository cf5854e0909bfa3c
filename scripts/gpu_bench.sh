#!/usr/bin/env bash
# The prepared GPU check: install what is missing from wheels carried beside the checkout
# ($WHEELS, default .wheels/: hydra-core, omegaconf, antlr4-python3-runtime), run the CUDA-only
# tests and the training-step benchmark, and write every result into $OUT.
#
#   OUT=gpu-results bash scripts/gpu_bench.sh            # on a GPU machine (about 7 minutes on an H200)
#   OUT=/tmp/dry BATLIT_DRY_RUN=1 bash scripts/gpu_bench.sh   # tiny sizes, runs on a CPU
#
# Make the wheels on a machine with package access:
#   pip wheel --no-deps -w .wheels hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the results}
WHEELS=${WHEELS:-.wheels}
PY=${PYTHON:-python3}
DRY=${BATLIT_DRY_RUN:-0}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}   # seconds per step: a hang still leaves the other steps' results
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
[ -e src/batlit/conf ] || ln -s ../../conf src/batlit/conf   # a copy that dropped the link

{
  echo "== environment"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import hydra, omegaconf" 2>/dev/null || "$PY" -m pip install -q --no-index --find-links "$WHEELS" \
      hydra-core omegaconf antlr4-python3-runtime
  "$PY" -c "import sys, torch, lightning, hydra; print(sys.version.split()[0], 'torch', torch.__version__, \
'lightning', lightning.__version__, 'hydra', hydra.__version__, 'cuda', torch.cuda.is_available())"
} >"$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

status=0
echo "== CUDA-only tests"
timeout "$STEP_TIMEOUT" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py >"$OUT/cuda_tests.txt" 2>&1 || status=1
tail -n 3 "$OUT/cuda_tests.txt"

# Attack strength per precision (about a minute): KL and CE attacks in fp32, fp32 with TF32
# convolutions, a bf16 step with each attack's default precision, and all-bf16 attacks.
echo "== attack strength per precision"
timeout "$STEP_TIMEOUT" "$PY" -m batlit.precision_check --repeats "$([ "$DRY" = 1 ] && echo 1 || echo 3)" \
    --n-test "$([ "$DRY" = 1 ] && echo 64 || echo 512)" --out "$OUT/precision_check.json" \
    >"$OUT/precision_check.txt" 2>&1 || status=1
cat "$OUT/precision_check.txt"

# Host syncs per training step of each method (seconds): batlit's deliberate reads (batlit.sync)
# against the synchronizing CUDA calls torch sees (torch.cuda.set_sync_debug_mode)
echo "== host syncs per training step"
timeout "$STEP_TIMEOUT" "$PY" -m batlit.sync_check --batch "$([ "$DRY" = 1 ] && echo 16 || echo 128)" \
    --out "$OUT/sync_check.json" >"$OUT/sync_check.txt" 2>&1 || status=1
cat "$OUT/sync_check.txt"

if [ "$DRY" = 1 ]; then
  runs=("small_cnn 16 32 false 1 0")
else
  runs=("resnet18 128 32 false 5 2" "resnet18 128 bf16 true 5 2" "resnet18 512 32 true 5 2" "resnet18 512 bf16 true 5 2")
fi
for run in "${runs[@]}"; do
  read -r model batch precision cl repeats warmup <<<"$run"
  name="bench_${model}_b${batch}_${precision}$([ "$cl" = true ] && echo _cl)"
  echo "== $name"
  timeout "$STEP_TIMEOUT" "$PY" -m batlit.bench model="$model" batch_size="$batch" precision="$precision" channels_last="$cl" \
      repeats="$repeats" warmup="$warmup" out="$OUT/$name.json" \
      'methods=[standard,pgd_at,trades,bat,bat_frozen,bat_nosync,reference_bat]' >"$OUT/$name.txt" 2>&1 || status=1
  cat "$OUT/$name.txt"
done
# Real training epochs through the CLI with the default fast paths (on a GPU: bf16 autocast,
# channels_last, the dataset resident on the GPU with on-device crop/flip): images/s per epoch
# from the run's own perf/train_images_per_s log; the first epoch includes warm-up.
if [ "$DRY" = 1 ]; then
  epoch_args=(model=small_cnn data.n_train=256 data.n_test=64 data.image_size=16 data.batch_size=64 epochs=2)
else
  epoch_args=(model=resnet18 data.n_train=50000 data.n_test=1000 data.image_size=32 data.batch_size=512 epochs=3)
fi
for method in pgd_at bat; do
  echo "== epoch_$method"
  timeout "$STEP_TIMEOUT" "$PY" -m batlit.train method=$method data=synthetic "${epoch_args[@]}" data.val_size=0 test=false \
      scheduler=constant trainer.enable_progress_bar=false hydra.run.dir="$OUT/epoch_$method" \
      >"$OUT/epoch_$method.txt" 2>&1 || status=1
  "$PY" - "$OUT/epoch_$method/csv/metrics.csv" "$method" <<'PY' | tee -a "$OUT/epochs.txt" || status=1
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("perf/train_images_per_s")]
rates = [float(r["perf/train_images_per_s"]) for r in rows]
secs = [float(r["perf/epoch_seconds"]) for r in rows]
print(f"{sys.argv[2]}: images/s per epoch {[round(x) for x in rates]}, seconds per epoch {[round(x, 2) for x in secs]}")
PY
done
echo "results in $OUT (status $status)"
exit $status
