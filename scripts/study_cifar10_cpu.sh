#!/usr/bin/env bash
# The CPU-scale reproduction study on the real CIFAR-10 images (experiment=study_cifar10_cpu):
# standard, PGD-AT, TRADES (1/lambda = 1 and 6), FAT, GAIRAT, BAT and FRL (Reweight+Remargin,
# tau 0.05 and 0.07, fine-tuned from each seed's PGD-AT; tau chosen on the validation split),
# 3 seeds; the paper's Table 4 (PGD-AT without the poor classes 2-5 or the good classes 1, 6, 8, 9,
# 600 training images per kept class as in the full runs); AutoAttack on the final PGD-AT,
# TRADES(6) and BAT; the analysis of PGD-AT vs BAT with the Figure 5 gallery; then batlit.report.
# Every step is skipped when its output exists and a killed training run continues from its
# last.ckpt, so rerunning the script resumes the study where it stopped.
#
#   bash scripts/study_cifar10_cpu.sh                          # all of it (hours on 2 CPU cores)
#   SEEDS="0" METHODS="pgd_at bat" bash scripts/study_cifar10_cpu.sh
#   OUT=/tmp/study BATLIT_DRY_RUN=1 bash scripts/study_cifar10_cpu.sh   # tiny sizes: checks the pipeline
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-outputs/study_cifar10_cpu}
SEEDS=${SEEDS:-"0 1 2"}
METHODS=${METHODS:-"standard pgd_at trades1 trades6 fat gairat bat frl table4_wo_poor table4_wo_good"}
AA_SAMPLES=${AA_SAMPLES:-2000}
extra=() aa_args=()
if [ "${BATLIT_DRY_RUN:-0}" = 1 ]; then  # the same pipeline on a few hundred images
  extra=(epochs=2 data.train_subset=300 data.test_subset=100 data.val_size=100 attack.train.steps=2
         attack.val.steps=2 attack.test.steps=2 trainer.check_val_every_n_epoch=1)
  AA_SAMPLES=20
  aa_args=(attack.version=apgd-ce)  # one AutoAttack component: the pipeline, not the numbers
fi

train() {  # train NAME OVERRIDES...: one run into $OUT/NAME, skipped when finished, resumed when killed
  local name=$1; shift
  if [ -f "$OUT/$name/metrics.json" ]; then echo "done     $name"; return; fi
  echo "training $name"
  "$PY" -m batlit.train experiment=study_cifar10_cpu "$@" "${extra[@]}" resume=true \
      hydra.run.dir="$OUT/$name" >"$OUT/$name.log" 2>&1 || { tail -n 5 "$OUT/$name.log"; return 1; }
}

mkdir -p "$OUT"
for seed in $SEEDS; do
  for method in $METHODS; do
    mkdir -p "$OUT/$method"
    case $method in
      standard) train standard/seed$seed method=standard seed=$seed ;;
      pgd_at)   train pgd_at/seed$seed method=pgd_at seed=$seed ;;
      trades1)  train trades1/seed$seed method=trades method.beta=1 seed=$seed ;;
      trades6)  train trades6/seed$seed method=trades method.beta=6 seed=$seed ;;
      fat)      train fat/seed$seed method=fat 'method.tau_schedule=[[1,0],[6,1],[10,2]]' seed=$seed ;;
      gairat)   train gairat/seed$seed method=gairat method.begin_epoch=7 seed=$seed ;;
      bat)      train bat/seed$seed method=bat seed=$seed ;;
      table4_wo_poor) train table4_wo_poor/seed$seed method=pgd_at 'data.exclude_classes=[2,3,4,5]' \
                          data.train_subset=3600 seed=$seed ;;
      table4_wo_good) train table4_wo_good/seed$seed method=pgd_at 'data.exclude_classes=[1,6,8,9]' \
                          data.train_subset=3600 seed=$seed ;;
      frl)
        [ -f "$OUT/pgd_at/seed$seed/metrics.json" ] || train pgd_at/seed$seed method=pgd_at seed=$seed
        for tau in 0.05 0.07; do
          mkdir -p "$OUT/frl_tau$tau"
          train frl_tau$tau/seed$seed method=frl_rwrm method.bound=$tau seed=$seed epochs=4 scheduler=constant \
              optimizer.lr=0.005 method.halve_every=2 \
              method.init_ckpt="$OUT/pgd_at/seed$seed/checkpoints/last.ckpt"
        done ;;
      *) echo "unknown method $method"; exit 2 ;;
    esac
  done
done

# FRL's tau: the one with the lower mean worst-class robust error on the validation split
frl_dir=""
if [[ " $METHODS " == *" frl "* ]]; then
  frl_dir=$("$PY" - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
scores = {}
for tau in ("0.05", "0.07"):
    vals = [json.loads(p.read_text())["val"]["rob_worst"] for p in sorted((out / f"frl_tau{tau}").glob("seed*/metrics.json"))]
    if vals:
        scores[tau] = statistics.fmean(vals)
best = min(scores, key=scores.get)
(out / "frl_choice.json").write_text(json.dumps({"val_rob_worst": scores, "chosen_tau": best}, indent=2))
print(out / f"frl_tau{best}")
PY
)
  echo "FRL: chose $frl_dir on the validation split ($OUT/frl_choice.json)"
fi

# AutoAttack on the final PGD-AT, TRADES(6) and BAT models
for method in pgd_at trades6 bat; do
  [[ " $METHODS " == *" $method "* ]] || continue
  for seed in $SEEDS; do
    run="$OUT/$method/seed$seed"
    if [ -f "$run/eval_autoattack.json" ]; then echo "done     autoattack $method/seed$seed"; continue; fi
    echo "autoattack $method/seed$seed"
    "$PY" -m batlit.evaluate ckpt="$run/checkpoints/last.ckpt" attack=autoattack n_samples=$AA_SAMPLES "${aa_args[@]}" \
        progress_bar=false >"$run/autoattack.log" 2>&1 || { tail -n 5 "$run/autoattack.log"; exit 1; }
  done
done

# Source/target-class analysis of PGD-AT vs BAT (the first seed), and the Figure 5 gallery: test
# images of the poor classes 2-5 that PGD-AT gets wrong and BAT gets right
first_seed=${SEEDS%% *}
baseline_ckpt="$OUT/pgd_at/seed$first_seed/checkpoints/last.ckpt"
for method in pgd_at bat; do
  run="$OUT/$method/seed$first_seed"
  gallery=()
  [ "$method" = bat ] && [ -f "$baseline_ckpt" ] && gallery=(gallery.baseline_ckpt="$baseline_ckpt" 'gallery.classes=[2,3,4,5]')
  [ -f "$run/metrics.json" ] || continue
  [ -f "$run/analysis/analysis.json" ] && { [ ${#gallery[@]} = 0 ] || [ -f "$run/analysis/gallery.json" ]; } && continue
  echo "analyze $method/seed$first_seed"
  "$PY" -m batlit.analyze ckpt="$run/checkpoints/last.ckpt" n_samples=$AA_SAMPLES progress_bar=false "${gallery[@]}" \
      >"$run/analyze.log" 2>&1 || { tail -n 5 "$run/analyze.log"; exit 1; }
done

# The table and figures (ρ against PGD-AT)
dirs=()
for method in standard pgd_at trades1 trades6 fat gairat bat; do
  [ -d "$OUT/$method" ] && ls "$OUT/$method"/seed*/metrics.json >/dev/null 2>&1 && dirs+=("$OUT/$method")
done
[ -n "$frl_dir" ] && dirs+=("$frl_dir")
baseline=()
[ -d "$OUT/pgd_at" ] && baseline=(--baseline "$OUT/pgd_at")
"$PY" -m batlit.report "${dirs[@]}" "${baseline[@]}" --out "$OUT/report"

# Table 4: PGD-AT on all classes, without the poor ones, without the good ones
t4=()
for method in pgd_at table4_wo_poor table4_wo_good; do
  [ -d "$OUT/$method" ] && ls "$OUT/$method"/seed*/metrics.json >/dev/null 2>&1 && t4+=("$OUT/$method")
done
if [ ${#t4[@]} -gt 1 ]; then
  "$PY" -m batlit.report "${t4[@]}" --out "$OUT/report_table4" --no-figures
fi
