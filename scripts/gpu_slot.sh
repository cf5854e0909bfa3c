#!/usr/bin/env bash
# One GPU slot, one command of at most 8 minutes: install the carried wheels, check, measure, train
# briefly on real CIFAR-10 and bring back what was found, in at most 3 files under $OUT.
#
#   OUT=/some/folder bash scripts/gpu_slot.sh                 # the slot (docs/performance.md: the call to paste)
#   OUT=/tmp/dry DRY=1 bash scripts/gpu_slot.sh               # the same steps, tiny and on the CPU (tests/cli/test_gpu_slot.py)
#   OUT=/some/folder PLAN=bench bash scripts/gpu_slot.sh      # scripts/gpu_bench.sh: checks and the step benchmark only
#
# Before the slot, on a machine with package access, in the checkout:
#   make gpu-wheels                                           # .wheels/ (ignored), under 1 MiB
#   mkdir -p data/cifar10-jpeg && cp ../shared/data/cifar10-jpeg/{train,test}.zip data/cifar10-jpeg/   # /data/ is ignored
# and name `.wheels` and `data/cifar10-jpeg` in the run's carry (../shared does not travel).
#
# Plan `slot` (the default), in order, each step under its own `timeout` (the seconds after its
# name; together at most 480, tests/cli/test_gpu_slot.py checks it, and the script caps each step by
# what is left of BUDGET too): the wheels into a scratch --target folder (never the image's own
# Python; --no-deps: torchattacks pins an old requests), the environment, the CUDA-only tests,
# host syncs per training step, the attacks' strength per precision on the probe, the step
# benchmark of ResNet-18 at batch 128 and 512 (the defaults, bf16 + channels_last, beside plain
# fp32), one short training each of PGD-AT, TRADES(6) and BAT on all 50,000 CIFAR-10 images (their
# paper recipes, 1 epoch, cut at FIT_TIME), each ending with PGD-20 on the 10,000 test images, and
# the attacks' strength per precision on the trained BAT. Runs and checkpoints stay in the scratch
# folder WORK; $OUT receives summary.md, console.log and results.tar.gz (JSON, CSV, YAML, logs:
# scripts/gpu_slot_pack.py), nothing else.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder whose files come back (at most 3 files are written there)}
PLAN=${PLAN:-slot}
DRY=${DRY:-${BATLIT_DRY_RUN:-0}}
BUDGET=${BUDGET:-480}          # seconds for the whole script: a step gets at most what is left
TIME_SCALE=${TIME_SCALE:-1}    # a dry run on a slow or shared CPU: every limit and BUDGET times this
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.wheels}
DATA_DIR=${DATA_DIR:-data/cifar10-jpeg}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/batlit-gpu-slot.XXXXXX")}
case $PLAN in slot|bench) ;; *) echo "PLAN must be slot or bench, got '$PLAN'" >&2; exit 2 ;; esac
[[ "$TIME_SCALE" =~ ^[1-9][0-9]?$ ]] || { echo "TIME_SCALE must be a whole number 1-99, got '$TIME_SCALE'" >&2; exit 2; }
RES=$WORK/results   # what is packed: small text files only
RUNS=$WORK/runs     # training runs with their checkpoints: never packed
SITE=$WORK/site     # the carried wheels, installed --target here
mkdir -p "$RES/logs" "$RUNS" "$SITE" "$OUT"
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
export XDG_CACHE_HOME=$WORK/cache   # the decoded JPEGs: the first training decodes, the next ones read
[ -e src/batlit/conf ] || ln -s ../../conf src/batlit/conf   # a copy that dropped the link
START=$(date +%s)
STATUS=0
exec > >(tee -a "$WORK/console.log") 2>&1

# step NAME SECONDS COMMAND...: COMMAND under `timeout`, for SECONDS or what is left of BUDGET
# (less the pack step's reserve), its output in logs/NAME.txt; a failure is recorded, not fatal
step() {
  local name=$1 limit=$(( $2 * TIME_SCALE )) left rc t0 ms; shift 2
  left=$(( BUDGET * TIME_SCALE - 10 - ($(date +%s) - START) ))
  [ "$name" = pack ] && left=$(( left + 10 ))
  (( limit > left )) && limit=$left
  if (( limit < 3 )); then
    printf '%-18s skipped: the %s s budget is spent\n' "$name" "$BUDGET" | tee -a "$RES/steps.txt"; STATUS=1; return
  fi
  t0=$(date +%s%N)
  timeout --kill-after=3 "$limit" "$@" >"$RES/logs/$name.txt" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ $rc = 0 ] || STATUS=1
  printf '%-18s rc %-3s %4d.%d s of %3d s%s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000 / 100)) "$limit" \
      "$([ $rc = 124 ] && echo '  (timed out)')" | tee -a "$RES/steps.txt"
  [ $rc = 0 ] || tail -n 5 "$RES/logs/$name.txt" | sed 's/^/    /'
}

# The data: the CIFAR-10 JPEG zips carried inside the checkout (DATA_DIR); a dry run without them
# trains on synthetic images instead
if [ -f "$DATA_DIR/train.zip" ] && [ -f "$DATA_DIR/test.zip" ]; then
  DATA_ARGS="data=cifar10_jpeg data.root=$(cd "$DATA_DIR" && pwd)"
elif [ "$DRY" = 1 ]; then
  DATA_ARGS="data=synthetic data.n_train=256 data.n_test=64 data.image_size=16"
else
  echo "no CIFAR-10 zips in DATA_DIR=$DATA_DIR: copy them there and carry that folder (the trainings will fail)"
  DATA_ARGS="data=cifar10_jpeg data.root=$DATA_DIR"
fi
if [ "$DRY" = 1 ]; then  # the same steps at sizes a CPU runs in seconds
  DEV=cpu SYNC_SIZE="--batch 16 --size 16" PROBE_SIZE="--n-test 64 --repeats 1" TRAINED_SIZE="--n-test 64 --repeats 1"
  BENCH_MODEL="model=small_cnn model.width=8 data.image_size=16 repeats=1 warmup=1" BATCHES=(16 32)
  TRAIN_SIZE="trainer=cpu model=small_cnn model.width=8 data.train_subset=200 data.test_subset=100 attack.train.steps=2 attack.test.steps=2"
  FIT_TIME=${FIT_TIME:-00:00:00:20} EPOCH_SIZE="model=small_cnn model.width=8 data.n_train=256 data.n_test=64 data.image_size=16 data.batch_size=64 trainer=cpu"
else
  DEV=cuda SYNC_SIZE="--batch 128" PROBE_SIZE="--n-test 512 --repeats 3" TRAINED_SIZE="--n-test 1000 --repeats 1"
  BENCH_MODEL="model=resnet18 repeats=5 warmup=2" BATCHES=(128 512)
  TRAIN_SIZE="trainer=gpu"
  FIT_TIME=${FIT_TIME:-00:00:00:35} EPOCH_SIZE="model=resnet18 data.n_train=50000 data.n_test=1000 data.image_size=32 data.batch_size=512 trainer=gpu"
fi
export PY SITE WHEELS DEV RES
COMMON="estimate_cost=false trainer.enable_progress_bar=false +trainer.max_time=$FIT_TIME"

echo "== batlit gpu_slot: plan $PLAN, dry run $DRY, budget $BUDGET s, work folder $WORK"

plan_slot() {
  step install 30 bash scripts/gpu_slot_install.sh
  step environment 10 "$PY" scripts/gpu_slot_pack.py environment "$RES/environment.json"
  step cuda_tests 50 "$PY" -m pytest -q -rs -p no:cacheprovider tests/run/test_cuda.py --junitxml="$RES/cuda_tests.xml"
  step sync_check 25 "$PY" -m batlit.tools.sync_check --device $DEV $SYNC_SIZE --out "$RES/sync_check.json"
  step precision_probe 25 "$PY" -m batlit.tools.precision_check --device $DEV $PROBE_SIZE --out "$RES/precision_probe.json"
  step bench_small 40 "$PY" -m batlit.bench $BENCH_MODEL batch_size=${BATCHES[0]} baseline=true count_flops=false \
      'methods=[standard,pgd_at,trades,bat]' out="$RES/bench_b${BATCHES[0]}.json"
  step bench_large 40 "$PY" -m batlit.bench $BENCH_MODEL batch_size=${BATCHES[1]} baseline=true count_flops=false \
      'methods=[standard,pgd_at,trades,bat]' out="$RES/bench_b${BATCHES[1]}.json"
  step train_pgd_at 70 "$PY" -m batlit.train experiment=pgd_at_cifar10 $DATA_ARGS epochs=1 $COMMON $TRAIN_SIZE \
      hydra.run.dir="$RUNS/pgd_at"
  step train_trades6 70 "$PY" -m batlit.train experiment=trades6_cifar10 $DATA_ARGS epochs=1 $COMMON $TRAIN_SIZE \
      hydra.run.dir="$RUNS/trades6"
  step train_bat 70 "$PY" -m batlit.train experiment=bat_cifar10 $DATA_ARGS epochs=1 $COMMON $TRAIN_SIZE \
      hydra.run.dir="$RUNS/bat"
  step precision_trained 30 "$PY" -m batlit.tools.precision_check --device $DEV $TRAINED_SIZE \
      --ckpt "$RUNS/bat/checkpoints/last.ckpt" --out "$RES/precision_trained.json"
  step pack 10 "$PY" scripts/gpu_slot_pack.py pack "$WORK" "$OUT"
}

plan_bench() {  # scripts/gpu_bench.sh: the checks, every BAT variant in the step benchmark, synthetic epochs
  step install 30 bash scripts/gpu_slot_install.sh
  step environment 10 "$PY" scripts/gpu_slot_pack.py environment "$RES/environment.json"
  step cuda_tests 50 "$PY" -m pytest -q -rs -p no:cacheprovider tests/run/test_cuda.py --junitxml="$RES/cuda_tests.xml"
  step sync_check 25 "$PY" -m batlit.tools.sync_check --device $DEV $SYNC_SIZE --out "$RES/sync_check.json"
  step precision_probe 25 "$PY" -m batlit.tools.precision_check --device $DEV $PROBE_SIZE --out "$RES/precision_probe.json"
  step bench_small 70 "$PY" -m batlit.bench $BENCH_MODEL batch_size=${BATCHES[0]} baseline=true \
      'methods=[standard,pgd_at,trades,bat,bat_frozen,bat_nosync,reference_bat]' out="$RES/bench_b${BATCHES[0]}.json"
  step bench_large 70 "$PY" -m batlit.bench $BENCH_MODEL batch_size=${BATCHES[1]} baseline=true \
      'methods=[standard,pgd_at,trades,bat,bat_frozen,bat_nosync,reference_bat]' out="$RES/bench_b${BATCHES[1]}.json"
  step epochs_pgd_at 90 "$PY" -m batlit.train method=pgd_at data=synthetic $EPOCH_SIZE epochs=3 data.val_size=0 \
      test=false scheduler=constant $COMMON hydra.run.dir="$RUNS/epochs_pgd_at"
  step epochs_bat 90 "$PY" -m batlit.train method=bat data=synthetic $EPOCH_SIZE epochs=3 data.val_size=0 \
      test=false scheduler=constant $COMMON hydra.run.dir="$RUNS/epochs_bat"
  step pack 10 "$PY" scripts/gpu_slot_pack.py pack "$WORK" "$OUT"
}

plan_$PLAN
echo "== done in $(( $(date +%s) - START )) s (status $STATUS); in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $STATUS
