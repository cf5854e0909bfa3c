#!/usr/bin/env bash
# The paper-scale reproduction on CIFAR-10 (ResNet-18, the paper's Table 1 and Table 3 rows), for a
# GPU: each method runs its paper experiment config (conf/experiment/<method>_cifar10.yaml: the
# paper's epochs, lr schedule and attacks) on the full training set (49,000 images; 1,000 held out
# for validation) and the full test set, 3 seeds; FRL (Reweight+Remargin, tau 0.05 and 0.07)
# fine-tunes each seed's PGD-AT and its tau is chosen on the validation split; then AutoAttack on
# PGD-AT, TRADES(6) and BAT, the source/target-class analysis with the Figure 5 gallery, and
# batlit.report. Resumable like scripts/study_cifar10_cpu.sh: finished steps are skipped and a killed
# run continues from its last.ckpt.
#
#   bash scripts/study_cifar10_gpu.sh                              # the paper's schedules (days on one GPU)
#   EPOCHS=15 SEEDS=0 METHODS="pgd_at bat" bash scripts/study_cifar10_gpu.sh   # a shortened schedule
#   DATA=cifar10 bash scripts/study_cifar10_gpu.sh                 # torchvision's CIFAR-10 (downloads it)
#   OUT=/tmp/g BATLIT_DRY_RUN=1 bash scripts/study_cifar10_gpu.sh  # tiny sizes: checks the pipeline (CPU too)
#
# EPOCHS=N rescales every epoch-counted setting to N epochs: lr milestones, FAT's tau schedule,
# GAIRAT's burn-in and FRL's fine-tuning length and halving period. The default data is the
# CIFAR-10 JPEG copy (data=cifar10_jpeg) because GPU machines often have no internet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-outputs/study_cifar10_gpu}
SEEDS=${SEEDS:-"0 1 2"}
METHODS=${METHODS:-"standard pgd_at trades1 trades6 fat gairat bat frl"}
DATA=${DATA:-cifar10_jpeg}
EPOCHS=${EPOCHS:-paper}
AA_SAMPLES=${AA_SAMPLES:-null}       # null: the whole test set
ANALYZE_SAMPLES=${ANALYZE_SAMPLES:-2000}
extra=() aa_args=()
if [ "${BATLIT_DRY_RUN:-0}" = 1 ]; then  # the same pipeline on a few hundred images, on any machine
  EPOCHS=2 AA_SAMPLES=20 ANALYZE_SAMPLES=20
  aa_args=(attack.version=apgd-ce)  # one AutoAttack component: the pipeline, not the numbers
  extra=(model=small_cnn model.width=8 data.train_subset=300 data.test_subset=100 data.val_size=100
         attack.train.steps=2 attack.val.steps=2 attack.test.steps=2)
fi
if [ "$EPOCHS" != paper ] && ! [[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]]; then
  echo "EPOCHS must be 'paper' or a positive whole number of epochs, got '$EPOCHS'" >&2; exit 2
fi

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
  local name=$1 experiment=$2; shift 2
  if [ -f "$OUT/$name/metrics.json" ]; then echo "done     $name"; return; fi
  echo "training $name"
  # shellcheck disable=SC2046  # the scaled overrides are space-separated words
  "$PY" -m batlit.train experiment="$experiment" data="$DATA" $(scaled "$experiment") "$@" "${extra[@]}" resume=true \
      trainer.enable_progress_bar=false hydra.run.dir="$OUT/$name" >"$OUT/$name.log" 2>&1 \
      || { tail -n 5 "$OUT/$name.log"; return 1; }
}

mkdir -p "$OUT"
for seed in $SEEDS; do
  for method in $METHODS; do
    mkdir -p "$OUT/$method"
    case $method in
      standard) train standard/seed$seed pgd_at_cifar10 method=standard seed=$seed ;;
      pgd_at|trades1|trades6|fat|gairat|bat) train $method/seed$seed ${method}_cifar10 seed=$seed ;;
      frl)
        [ -f "$OUT/pgd_at/seed$seed/metrics.json" ] || train pgd_at/seed$seed pgd_at_cifar10 seed=$seed
        for tau in 005 007; do
          mkdir -p "$OUT/frl_tau$tau"
          train frl_tau$tau/seed$seed frl_rwrm_cifar10_tau$tau seed=$seed \
              method.init_ckpt="$OUT/pgd_at/seed$seed/checkpoints/last.ckpt"
        done ;;
      *) echo "unknown method $method" >&2; exit 2 ;;
    esac
  done
done

frl_dir=""
if [[ " $METHODS " == *" frl "* ]]; then  # tau by the mean worst-class robust error on validation
  frl_dir=$("$PY" - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
scores = {tau: statistics.fmean(json.loads(p.read_text())["val"]["rob_worst"]
                                for p in sorted((out / f"frl_tau{tau}").glob("seed*/metrics.json")))
          for tau in ("005", "007") if list((out / f"frl_tau{tau}").glob("seed*/metrics.json"))}
best = min(scores, key=scores.get)
(out / "frl_choice.json").write_text(json.dumps({"val_rob_worst": scores, "chosen": f"frl_tau{best}"}, indent=2))
print(out / f"frl_tau{best}")
PY
)
  echo "FRL: chose $frl_dir on the validation split ($OUT/frl_choice.json)"
fi

for method in pgd_at trades6 bat; do
  [[ " $METHODS " == *" $method "* ]] || continue
  for seed in $SEEDS; do
    run="$OUT/$method/seed$seed"
    [ -f "$run/eval_autoattack.json" ] && { echo "done     autoattack $method/seed$seed"; continue; }
    echo "autoattack $method/seed$seed"
    "$PY" -m batlit.evaluate ckpt="$run/checkpoints/last.ckpt" attack=autoattack n_samples=$AA_SAMPLES "${aa_args[@]}" \
        progress_bar=false >"$run/autoattack.log" 2>&1 || { tail -n 5 "$run/autoattack.log"; exit 1; }
  done
done

first_seed=${SEEDS%% *}
baseline_ckpt="$OUT/pgd_at/seed$first_seed/checkpoints/last.ckpt"
for method in pgd_at bat; do
  run="$OUT/$method/seed$first_seed"
  gallery=()
  [ "$method" = bat ] && [ -f "$baseline_ckpt" ] && gallery=(gallery.baseline_ckpt="$baseline_ckpt" 'gallery.classes=[2,3,4,5]')
  [ -f "$run/metrics.json" ] || continue
  [ -f "$run/analysis/analysis.json" ] && { [ ${#gallery[@]} = 0 ] || [ -f "$run/analysis/gallery.json" ]; } && continue
  echo "analyze $method/seed$first_seed"
  "$PY" -m batlit.analyze ckpt="$run/checkpoints/last.ckpt" n_samples=$ANALYZE_SAMPLES progress_bar=false \
      "${gallery[@]}" >"$run/analyze.log" 2>&1 || { tail -n 5 "$run/analyze.log"; exit 1; }
done

dirs=()
for method in standard pgd_at trades1 trades6 fat gairat bat; do
  ls "$OUT/$method"/seed*/metrics.json >/dev/null 2>&1 && dirs+=("$OUT/$method")
done
[ -n "$frl_dir" ] && dirs+=("$frl_dir")
baseline=()
[ -d "$OUT/pgd_at" ] && baseline=(--baseline "$OUT/pgd_at")
"$PY" -m batlit.report "${dirs[@]}" "${baseline[@]}" --out "$OUT/report"
