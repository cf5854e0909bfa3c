#!/usr/bin/env bash
# Study round 2 (docs/results_round2.md): every robust-fairness method on one protocol, at two scales.
#
# SCALE=small (experiment=study_cifar10_cpu, the protocol of docs/results.md): standard, PGD-AT,
#   TRADES(1), TRADES(6), FAT, GAIRAT, BAT, FRL (Reweight+Remargin from PGD-AT, tau 0.05/0.07 chosen
#   on validation), CFA, WAT, DAFA, FAAL fine-tuning PGD-AT (AT loss) and TRADES(6) (TRADES loss),
#   and FRL from TRADES(6) (tau 0.05); 3 seeds.
# SCALE=large (experiment=study_cifar10_cpu_large: width 32, 12,000 images, 20 epochs): PGD-AT and
#   the TRADES-based methods; 2 seeds.
# Every finished model gets PGD-20 and AutoAttack on the same $AA_SAMPLES test images. The methods
# beyond round 1's are named experiments, experiment=study2_SCALE_NAME (conf/experiment/study2_*.yaml:
# the scale's experiment with the method's settings), whose epoch-counted settings follow the
# authors' schedules scaled to the scale's epochs: CFA's begin 10 of 200 epochs, DAFA's warm-up 70 of
# 110, FAAL's 2 fine-tuning epochs at a tenth of the training lr then a hundredth (the authors': 0.01
# and 0.001 after training at 0.1). Nothing is chosen on test data.
# Resumable: a finished step is skipped, a killed training continues from its last.ckpt.
# Across machines: each finished run's metrics.json, config.yaml and eval_*.json are kept in
# RESULTS (results/round2/SCALE, tracked; COMMIT=1 commits each one), and a run kept there is
# not trained again. A fine-tuning whose base's checkpoint is not on this machine retrains the base
# first (the CPU is deterministic: keep_results.py says whether it reproduced the kept one). The
# reports and tables are made from RESULTS.
#
#   bash scripts/study_round2.sh                            # the small scale, all seeds (many hours on 2 cores)
#   SCALE=large bash scripts/study_round2.sh                # the larger scale
#   SEEDS=0 METHODS="cfa wat" bash scripts/study_round2.sh  # a part
#   COMMIT=1 nohup bash scripts/study_round2.sh &           # in the background, committing each result
#   OUT=/tmp/r2 BATLIT_DRY_RUN=1 bash scripts/study_round2.sh   # tiny sizes: checks the pipeline
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/study_common.sh
PY=${PYTHON:-.venv/bin/python}
SCALE=${SCALE:-small}
case $SCALE in
  small) EXPERIMENT=study_cifar10_cpu SEEDS=${SEEDS:-"0 1 2"}
         METHODS=${METHODS:-"standard pgd_at trades1 trades6 fat gairat bat frl cfa wat dafa faal_at faal_trades frl_trades"} ;;
  large) EXPERIMENT=study_cifar10_cpu_large SEEDS=${SEEDS:-"0 1"}
         METHODS=${METHODS:-"pgd_at trades6 bat cfa wat dafa faal_trades frl_trades"} ;;
  *) echo "SCALE must be small or large, got '$SCALE'" >&2; exit 2 ;;
esac
AA_SAMPLES=${AA_SAMPLES:-1000}   # 100 per class: AutoAttack takes about 20 s per 200 images of a small-scale model (docs/results_round2.md)
extra=() aa_args=() dafa_args=()
if [ "${BATLIT_DRY_RUN:-0}" = 1 ]; then  # the same pipeline on a few hundred images
  extra=(epochs=2 data.train_subset=300 data.test_subset=100 data.val_size=100 attack.train.steps=2
         attack.val.steps=2 attack.test.steps=2 trainer.check_val_every_n_epoch=1 scheduler.milestones=[2])
  dafa_args=(method.warmup_epoch=1)  # DAFA's 70 of 110 epochs scaled to the dry run's 2 (CFA's begin is 1 already)
  AA_SAMPLES=20 aa_args=(attack.version=apgd-ce)
  OUT=${OUT:-outputs/study_round2_${SCALE}_dryrun}
  RESULTS=${RESULTS:-$OUT/results}
fi
OUT=${OUT:-outputs/study_round2_$SCALE}
RESULTS=${RESULTS:-results/round2/$SCALE}
PROTOCOL="experiment=$EXPERIMENT dry_run=${BATLIT_DRY_RUN:-0} fidelity=issue19 aa_samples=$AA_SAMPLES"
stamp_protocol "$PROTOCOL"
OUT=$RESULTS stamp_protocol "$PROTOCOL"  # kept results of another protocol are never mixed in either

for method in $METHODS; do
  case $method in frl) names="frl_tau005 frl_tau007" ;; *) names=$method ;; esac
  for name in $names; do
    if [[ " $ROUND1_METHODS " != *" $method "* ]] && [ ! -f "conf/experiment/study2_${SCALE}_$name.yaml" ]; then
      echo "METHODS: no conf/experiment/study2_${SCALE}_$name.yaml for '$method'" >&2; exit 2
    fi
  done
done

# fine_tune NAME BASE_NAME SEED: experiment=study2_SCALE_NAME (NAME without dots) from BASE's finished
# model of the same seed
fine_tune() {
  local name=$1 base=$2 seed=$3
  local ckpt="$OUT/$base/seed$seed/checkpoints/last.ckpt"
  if [ -f "$OUT/$name/seed$seed/metrics.json" ] || [ -f "$RESULTS/$name/seed$seed/metrics.json" ]; then
    train "$name/seed$seed"; return  # prints done or kept
  fi
  if [ ! -f "$ckpt" ] && [ -f "$RESULTS/$base/seed$seed/metrics.json" ]; then
    echo "retrain  $base/seed$seed: $name fine-tunes it and its checkpoint is not on this machine"
    NEED_CKPT=1 train_round1 "$base" "$seed"
  fi
  [ -f "$ckpt" ] || { echo "skip     $name/seed$seed: $base/seed$seed is not trained yet"; return; }
  EXPERIMENT=study2_${SCALE}_${name//./} train "$name/seed$seed" seed="$seed" method.init_ckpt="$ckpt"
}

# evaluate_finished: PGD-20 and AutoAttack on the same test images, for every finished model in $OUT
# not yet evaluated here or kept evaluated in $RESULTS; each evaluation is kept at once
evaluate_finished() {
  local dir run attack args
  for dir in "$OUT"/*/seed*/; do
    run=${dir%/}
    [ -f "$run/metrics.json" ] || continue
    for attack in pgd20 autoattack; do
      [ -f "$run/eval_$attack.json" ] || [ -f "$RESULTS/${run#$OUT/}/eval_$attack.json" ] && continue
      echo "$attack ${run#$OUT/}"
      args=()
      [ $attack = autoattack ] && args=(${aa_args[@]+"${aa_args[@]}"})
      "$PY" -m batlit.evaluate ckpt="$run/checkpoints/last.ckpt" attack=$attack n_samples="$AA_SAMPLES" \
          ${args[@]+"${args[@]}"} progress_bar=false >"$run/$attack.log" 2>&1 || { tail -n 5 "$run/$attack.log"; exit 1; }
      keep_run "${run#$OUT/}"
    done
  done
}

# reports: from the kept results (every session's runs), FRL's tau on validation, the report of every
# method against PGD-AT, the TRADES-based one against TRADES(6), and the accuracy tables
reports() (
  OUT=$RESULTS
  local frl_dir="" dirs=() trades=() method
  if has_runs frl_tau0.05 frl_tau0.07; then frl_dir=$(choose_frl frl_tau0.05 frl_tau0.07); fi
  # FRL from TRADES(6) only in the TRADES-based table: its runs differ from FRL-from-PGD-AT in
  # method.init_ckpt alone, which batlit.report ignores (a per-seed path), so one table would pool them
  for method in standard pgd_at trades1 trades6 fat gairat bat cfa wat dafa faal_at faal_trades; do
    has_runs $method && dirs+=("$OUT/$method")
  done
  [ -n "$frl_dir" ] && dirs+=("$frl_dir")
  for method in trades6 frl_trades cfa bat wat dafa faal_trades; do
    has_runs $method && trades+=("$OUT/$method")
  done
  if [ -d "$OUT/pgd_at" ] && [ ${#dirs[@]} -gt 0 ]; then
    "$PY" -m batlit.report "${dirs[@]}" --baseline "$OUT/pgd_at" --out "$OUT/report" --no-figures >/dev/null
  fi
  if [ -d "$OUT/trades6" ] && [ ${#trades[@]} -gt 1 ]; then
    "$PY" -m batlit.report "${trades[@]}" --baseline "$OUT/trades6" --out "$OUT/report_trades" --no-figures >/dev/null
  fi
  "$PY" scripts/round2_tables.py "$OUT" >"$OUT/tables.md"
  "$PY" scripts/round2_claims.py "$OUT" >"$OUT/claims.md"
  commit_results "reports and tables"
  echo "reports  $OUT/report, $OUT/report_trades, $OUT/tables.md, $OUT/claims.md"
)

for seed in $SEEDS; do
  for method in $METHODS; do
    if [[ " $ROUND1_METHODS " == *" $method "* ]]; then train_round1 "$method" "$seed"; evaluate_finished; continue; fi
    case $method in
      cfa)  EXPERIMENT=study2_${SCALE}_cfa train cfa/seed$seed seed=$seed ;;
      wat)  EXPERIMENT=study2_${SCALE}_wat train wat/seed$seed seed=$seed ;;
      dafa) EXPERIMENT=study2_${SCALE}_dafa train dafa/seed$seed seed=$seed ${dafa_args[@]+"${dafa_args[@]}"} ;;
      faal_at)     fine_tune faal_at pgd_at $seed ;;
      faal_trades) fine_tune faal_trades trades6 $seed ;;
      frl)  # Reweight+Remargin from this seed's PGD-AT (which held out the same validation split), tau 0.05 and 0.07
        for tau in 0.05 0.07; do fine_tune frl_tau$tau pgd_at $seed; done ;;
      frl_trades) fine_tune frl_trades trades6 $seed ;;
      *) echo "unknown method $method" >&2; exit 2 ;;
    esac
    evaluate_finished  # each model is evaluated as soon as it is trained, and kept
  done
  reports  # each seed's tables are committed as soon as it is complete
done

evaluate_finished
reports
echo "study round 2 ($SCALE) in $RESULTS"
