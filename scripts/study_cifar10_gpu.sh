#!/usr/bin/env bash
# The paper-scale reproduction on CIFAR-10 (ResNet-18, the paper's Table 1 and Table 3 rows), for a
# GPU: each method runs its paper experiment config (conf/experiment/<method>_cifar10.yaml: the
# paper's epochs, lr schedule and attacks) on the full training set (50,000 images, as the authors
# train) and the full test set, 3 seeds; FRL
# (Reweight+Remargin, tau 0.05 and 0.07) fine-tunes a PGD-AT hot start that held FRL's 3,000-image
# validation split out of training, and its tau is chosen on that split; PGD-AT without the
# poor classes 2-5 or the good classes 1, 6, 8, 9 (Table 4); then AutoAttack on PGD-AT, TRADES(6)
# and BAT, the source/target-class analysis with the Figure 5 gallery, and batlit.report. Resumable like scripts/study_cifar10_cpu.sh: finished steps are skipped and a killed
# run continues from its last.ckpt.
#
#   bash scripts/study_cifar10_gpu.sh                              # the paper's schedules (days on one GPU)
#   EPOCHS=15 SEEDS=0 METHODS="pgd_at bat" bash scripts/study_cifar10_gpu.sh   # a shortened schedule
#   DATA=cifar10 bash scripts/study_cifar10_gpu.sh                 # torchvision's CIFAR-10 (downloads it)
#   OUT=/tmp/g BATLIT_DRY_RUN=1 bash scripts/study_cifar10_gpu.sh  # tiny sizes: checks the pipeline (CPU too)
#   MODE=short bash scripts/study_cifar10_gpu.sh                   # 3 methods, 6 epochs: 15 min or more on an H200
#   PACK_TO=$OUT OUT=/tmp/study MODE=short bash scripts/study_cifar10_gpu.sh   # where only $OUT comes back
#
# EPOCHS=N rescales every epoch-counted setting to N epochs: lr milestones, FAT's tau schedule,
# GAIRAT's burn-in and FRL's fine-tuning length and halving period. The default data is the
# CIFAR-10 JPEG copy (data=cifar10_jpeg, zips in DATA_ROOT) because GPU machines often have no internet.
#
# MODE=short: PGD-AT, TRADES(6) and BAT, seed 0, the paper's schedules rescaled to 6 epochs, on all
# 50,000 training images and the 10,000 test images (PGD-20), then AutoAttack and the analysis on
# 500 test images; no Table 4, FAT, GAIRAT or FRL. It does not fit one 10-minute command: at the
# H200 step rates recorded in docs/performance.md its training alone is about 11.5 minutes (18
# epochs of 391 steps of 87-104 ms); the one-command GPU check is scripts/gpu_slot.sh. Across
# several commands it resumes (finished runs are skipped, a killed one continues from last.ckpt)
# as long as $OUT survives between them. On a fresh machine it starts like scripts/gpu_slot.sh:
# python3 when there is no .venv, src/ on PYTHONPATH, the wheels carried in $WHEELS (make
# gpu-wheels) installed --no-deps into a scratch --target folder (never the image's own Python),
# and the JPEG zips from data/cifar10-jpeg or shared/data/cifar10-jpeg in the checkout or
# ../shared/data/cifar10-jpeg beside it. PACK_TO=DIR: at the end, only one file goes there,
# DIR/study_results.tar.gz (JSON, CSV, YAML, Markdown, logs and figures under 2 MiB; no checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/study_common.sh
if [ -z "${PYTHON:-}" ]; then  # a fresh machine has no .venv: the system python with src/ on the path
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PY=$PYTHON
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
[ -e src/batlit/conf ] || ln -s ../../conf src/batlit/conf   # a copy that dropped the link
MODE=${MODE:-full}
case $MODE in
  full) ;;
  short) SEEDS=${SEEDS:-0} METHODS=${METHODS:-"pgd_at trades6 bat"} EPOCHS=${EPOCHS:-6}
         AA_SAMPLES=${AA_SAMPLES:-500} ANALYZE_SAMPLES=${ANALYZE_SAMPLES:-500} ;;
  *) echo "MODE must be full or short, got '$MODE'" >&2; exit 2 ;;
esac
WHEELS=${WHEELS:-.wheels}
if ! "$PY" -c "import hydra, omegaconf, torchattacks, matplotlib" 2>/dev/null; then
  # the carried wheels into a scratch folder (never the image's own Python), without dependencies
  SITE=${SITE:-$(mktemp -d "${TMPDIR:-/tmp}/batlit-site.XXXXXX")}
  export PYTHONPATH="$PYTHONPATH:$SITE"
  PY=$PY SITE=$SITE WHEELS=$WHEELS bash scripts/gpu_slot_install.sh >/dev/null \
      || { echo "missing packages, and the wheels in WHEELS=$WHEELS do not provide them (make gpu-wheels)" >&2; exit 2; }
fi
SEEDS=${SEEDS:-"0 1 2"}
METHODS=${METHODS:-"standard pgd_at trades1 trades6 fat gairat bat frl table4_wo_poor table4_wo_good"}
DATA=${DATA:-cifar10_jpeg}
if [ -z "${DATA_ROOT:-}" ]; then  # the JPEG zips: carried inside the checkout, or beside it
  for candidate in data/cifar10-jpeg shared/data/cifar10-jpeg ../shared/data/cifar10-jpeg; do
    [ -f "$candidate/train.zip" ] && { DATA_ROOT=$(cd "$candidate" && pwd); break; }
  done
fi
data_root=()
[ "$DATA" = cifar10_jpeg ] && [ -n "${DATA_ROOT:-}" ] && data_root=(data.root="$DATA_ROOT")
EPOCHS=${EPOCHS:-paper}
AA_SAMPLES=${AA_SAMPLES:-null}       # null: the whole test set
ANALYZE_SAMPLES=${ANALYZE_SAMPLES:-2000}
extra=() aa_args=()
if [ "${BATLIT_DRY_RUN:-0}" = 1 ]; then  # the same pipeline on a few hundred images, on any machine
  EPOCHS=2 AA_SAMPLES=20 ANALYZE_SAMPLES=20
  aa_args=(attack.version=apgd-ce)  # one AutoAttack component: the pipeline, not the numbers
  extra=(model=small_cnn model.width=8 data.train_subset=300 data.test_subset=100 data.val_size=100
         attack.train.steps=2 attack.val.steps=2 attack.test.steps=2)
  OUT=${OUT:-outputs/study_cifar10_gpu_dryrun}
fi
if [ "$EPOCHS" != paper ] && ! [[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]]; then
  echo "EPOCHS must be 'paper' or a positive whole number of epochs, got '$EPOCHS'" >&2; exit 2
fi
OUT=${OUT:-outputs/study_cifar10_gpu}
stamp_protocol "experiments=<method>_cifar10 data=$DATA epochs=$EPOCHS dry_run=${BATLIT_DRY_RUN:-0} fidelity=issue19"

scaled() {  # scaled EXPERIMENT: the overrides that squeeze its epoch-counted settings into $EPOCHS
  [ "$EPOCHS" = paper ] && return 0
  "$PY" - "$1" "$EPOCHS" <<'PY'
import sys
name, n = sys.argv[1], int(sys.argv[2])
def at(epoch, total):  # an epoch of a `total`-epoch schedule, moved to the same place in n epochs
    return max(1, min(n, round(epoch * n / total)))
if name.startswith("frl"):
    out = [f"epochs={n}", f"scheduler.milestones=[{at(40, 120)},{at(80, 120)}]", f"method.halve_every={at(40, 120)}"]
elif name in ("fat_cifar10", "gairat_cifar10"):
    out = [f"epochs={n}", f"scheduler.milestones=[{at(60, 120)},{at(90, 120)},{at(110, 120)}]"]
    steps = dict([(1, 0), (at(51, 120), 1), (at(91, 120), 2)])  # on a short schedule a later tau wins an epoch
    out += ["method.tau_schedule=[" + ",".join(f"[{e},{t}]" for e, t in sorted(steps.items())) + "]"] \
        if name == "fat_cifar10" else [f"method.begin_epoch={at(60, 120)}"]
else:  # the 110-epoch schedule with x0.1 at 75, 90 and 100
    out = [f"epochs={n}", f"scheduler.milestones=[{at(75, 110)},{at(90, 110)},{at(100, 110)}]"]
print(" ".join(out))
PY
}

train() {  # train NAME EXPERIMENT OVERRIDES...
  local name=$1 experiment=$2 schedule scaled_args=(); shift 2
  if [ -f "$OUT/$name/metrics.json" ]; then echo "done     $name"; return; fi
  schedule=$(scaled "$experiment") || { echo "could not rescale $experiment to EPOCHS=$EPOCHS" >&2; exit 1; }
  read -ra scaled_args <<<"$schedule"
  echo "training $name"
  mkdir -p "$OUT/$name"
  "$PY" -m batlit.train experiment="$experiment" data="$DATA" ${data_root[@]+"${data_root[@]}"} \
      ${scaled_args[@]+"${scaled_args[@]}"} "$@" \
      ${extra[@]+"${extra[@]}"} resume=true trainer.enable_progress_bar=false hydra.run.dir="$OUT/$name" \
      >"$OUT/$name.log" 2>&1 || { tail -n 5 "$OUT/$name.log"; return 1; }
}

for seed in $SEEDS; do
  for method in $METHODS; do
    case $method in
      standard) train standard/seed$seed pgd_at_cifar10 method=standard seed=$seed ;;
      pgd_at|trades1|trades6|fat|gairat|bat) train $method/seed$seed ${method}_cifar10 seed=$seed ;;
      table4_wo_poor) train table4_wo_poor/seed$seed pgd_at_cifar10 'data.exclude_classes=[2,3,4,5]' seed=$seed ;;
      table4_wo_good) train table4_wo_good/seed$seed pgd_at_cifar10 'data.exclude_classes=[1,6,8,9]' seed=$seed ;;
      frl)  # Reweight+Remargin fine-tunes a PGD-AT that never saw FRL's validation images
        train frl_hot_start/seed$seed pgd_at_hot_start_cifar10 seed=$seed
        for tau in 005 007; do
          train frl_tau$tau/seed$seed frl_rwrm_cifar10_tau$tau seed=$seed \
              method.init_ckpt="$OUT/frl_hot_start/seed$seed/checkpoints/last.ckpt"
        done ;;
      *) echo "unknown method $method" >&2; exit 2 ;;
    esac
  done
done

pack_study() {  # PACK_TO: one small archive of the study's results, no checkpoint (the device tool's $OUT)
  [ -n "${PACK_TO:-}" ] || return 0
  mkdir -p "$PACK_TO"
  (cd "$OUT" && find . -type f -size -2M \( -name '*.json' -o -name '*.csv' -o -name '*.yaml' -o -name '*.md' \
      -o -name '*.log' -o -name '*.txt' -o -name '*.png' \) -print0 | tar czf "$PACK_TO/.study_results.tar.gz" --null -T -) \
    && mv "$PACK_TO/.study_results.tar.gz" "$PACK_TO/study_results.tar.gz"
}
trap pack_study EXIT   # also after a failed step: what finished still comes back

finish_study "$ANALYZE_SAMPLES" frl_tau005 frl_tau007
