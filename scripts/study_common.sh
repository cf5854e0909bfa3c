# Steps shared by scripts/study_cifar10_cpu.sh and scripts/study_cifar10_gpu.sh (sourced, not run).
# They read PY, OUT, SEEDS, METHODS, AA_SAMPLES, AA_SEEDS and the array aa_args from the calling script.

# stamp_protocol "KEY=VALUE ...": the settings that decide what a study folder holds; a rerun into
# the same $OUT with other settings (a dry run, another EPOCHS or DATA) is refused before any work,
# so finished steps of one protocol are never mixed with another's.
stamp_protocol() {
  local stamp="$OUT/protocol.txt"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$1" ]; then
    echo "OUT=$OUT holds a study run with '$(cat "$stamp")', not '$1': use another OUT" >&2
    exit 2
  fi
  mkdir -p "$OUT"
  echo "$1" >"$stamp"
}

# train NAME OVERRIDES...: one run of experiment=$EXPERIMENT into $OUT/NAME (with the dry run's
# $extra), skipped when finished, resumed from its last.ckpt when killed; its log is $OUT/NAME.log.
# Where the calling script sets RESULTS (a tracked folder), a run kept there by an earlier session is
# skipped too, unless NEED_CKPT=1 (its checkpoint is needed again: a fine-tuning's base), and every
# finished run is kept there (keep_run).
train() {
  local name=$1; shift
  if [ -f "$OUT/$name/metrics.json" ]; then echo "done     $name"; return; fi
  if [ -n "${RESULTS:-}" ] && [ -z "${NEED_CKPT:-}" ] && [ -f "$RESULTS/$name/metrics.json" ]; then
    echo "kept     $name"; return
  fi
  echo "training $name"
  mkdir -p "$OUT/$name"
  "$PY" -m batlit.train experiment="$EXPERIMENT" "$@" ${extra[@]+"${extra[@]}"} resume=true \
      hydra.run.dir="$OUT/$name" >"$OUT/$name.log" 2>&1 || { tail -n 5 "$OUT/$name.log"; return 1; }
  keep_run "$name"
}

# keep_run NAME: where RESULTS is set, copy $OUT/NAME's small result files into $RESULTS/NAME
# (scripts/keep_results.py) and, with COMMIT=1, commit them: a session's finished runs outlive it
keep_run() {
  [ -n "${RESULTS:-}" ] || return 0
  "$PY" scripts/keep_results.py "$OUT/$1" "$RESULTS/$1"
  commit_results "$1"
}

# commit_results WHAT: with COMMIT=1, commit $RESULTS alone (whatever else is staged stays staged)
commit_results() {
  [ "${COMMIT:-0}" = 1 ] || return 0
  git add -- "$RESULTS" && { git diff --cached --quiet -- "$RESULTS" || \
      git commit -q -m "study results: $1" -- "$RESULTS"; } || echo "commit of $1 failed: its files stay in $RESULTS"
}

# The methods of docs/results.md's protocol, as both CPU studies train them (FAT's τ schedule and
# GAIRAT's begin epoch scaled to 12 epochs there).
ROUND1_METHODS="standard pgd_at trades1 trades6 fat gairat bat"

# train_round1 METHOD SEED: one of $ROUND1_METHODS into $OUT/METHOD/seedSEED
train_round1() {
  local method=$1 seed=$2
  case $method in
    standard) train standard/seed$seed method=standard seed=$seed ;;
    pgd_at)   train pgd_at/seed$seed method=pgd_at seed=$seed ;;
    trades1)  train trades1/seed$seed method=trades method.beta=1 seed=$seed ;;
    trades6)  train trades6/seed$seed method=trades method.beta=6 seed=$seed ;;
    fat)      train fat/seed$seed method=fat 'method.tau_schedule=[[1,0],[6,1],[10,2]]' seed=$seed ;;
    gairat)   train gairat/seed$seed method=gairat method.begin_epoch=7 seed=$seed ;;
    bat)      train bat/seed$seed method=bat seed=$seed ;;
    *) echo "train_round1: unknown method $method" >&2; return 2 ;;
  esac
}

# has METHOD: whether METHOD is in $METHODS
has() { [[ " $METHODS " == *" $1 "* ]]; }

# has_runs DIR...: whether any of $OUT/DIR holds a finished seed
has_runs() {
  local name
  for name in "$@"; do ls "$OUT/$name"/seed*/metrics.json >/dev/null 2>&1 && return 0; done
  return 1
}

# choose_frl DIR...: of FRL's runs (one folder per tau, seeds below), the folder with the lower mean
# worst-class robust error on the validation split, then the lower mean average robust error; a
# tie on both goes to the first listed (the smaller tau, the smaller change to PGD-AT). Written to
# $OUT/frl_choice.json, printed
choose_frl() {
  "$PY" - "$OUT" "$@" <<'PY'
import json, statistics, sys
from pathlib import Path
out, names = Path(sys.argv[1]), sys.argv[2:]
scores = {}
for name in names:
    vals = [json.loads(p.read_text())["val"] for p in sorted((out / name).glob("seed*/metrics.json"))]
    if vals:
        scores[name] = tuple(statistics.fmean(v[k] for v in vals) for k in ("rob_worst", "rob_avg"))
best = min(scores, key=scores.get)  # min keeps the first of equal keys
tied = [n for n in scores if scores[n] == scores[best]]
(out / "frl_choice.json").write_text(json.dumps({
    "val_rob_worst": {n: s[0] for n, s in scores.items()}, "val_rob_avg": {n: s[1] for n, s in scores.items()},
    "chosen": best, "tied": tied if len(tied) > 1 else [],
}, indent=2))
print(out / best)
PY
}

# autoattack_final: AutoAttack (standard version) on the final PGD-AT, TRADES(6) and BAT models of
# the seeds in $AA_SEEDS (default: all), on $AA_SAMPLES test images, and PGD-20 on the same images
# (eval_pgd20.json), so the two rankings compare like with like
autoattack_final() {
  local method seed run attack
  for method in pgd_at trades6 bat; do
    has $method || continue
    for seed in ${AA_SEEDS:-$SEEDS}; do
      run="$OUT/$method/seed$seed"
      [ -f "$run/metrics.json" ] || continue
      for attack in pgd20 autoattack; do
        if [ -f "$run/eval_$attack.json" ]; then echo "done     $attack $method/seed$seed"; continue; fi
        echo "$attack $method/seed$seed"
        local args=()
        [ $attack = autoattack ] && args=(${aa_args[@]+"${aa_args[@]}"})
        "$PY" -m batlit.evaluate ckpt="$run/checkpoints/last.ckpt" attack=$attack n_samples="$AA_SAMPLES" \
            ${args[@]+"${args[@]}"} progress_bar=false >"$run/$attack.log" 2>&1 \
            || { tail -n 5 "$run/$attack.log"; exit 1; }
      done
    done
  done
}

# analyze_pair N_SAMPLES: source/target-class analysis of PGD-AT and BAT (the first seed), and the
# Figure 5 gallery against the finished PGD-AT: test images of the poor classes 2-5 it gets wrong
# and BAT gets right
analyze_pair() {
  local first_seed=${SEEDS%% *} method run
  local baseline="$OUT/pgd_at/seed$first_seed"
  for method in pgd_at bat; do
    run="$OUT/$method/seed$first_seed"
    [ -f "$run/metrics.json" ] || continue
    local gallery=()
    if [ "$method" = bat ] && [ -f "$baseline/metrics.json" ]; then
      gallery=(gallery.baseline_ckpt="$baseline/checkpoints/last.ckpt" 'gallery.classes=[2,3,4,5]')
    fi
    if [ -f "$run/analysis/analysis.json" ] && { [ ${#gallery[@]} = 0 ] || [ -f "$run/analysis/gallery.json" ]; }; then
      echo "done     analyze $method/seed$first_seed"; continue
    fi
    echo "analyze $method/seed$first_seed"
    "$PY" -m batlit.analyze ckpt="$run/checkpoints/last.ckpt" n_samples="$1" progress_bar=false \
        ${gallery[@]+"${gallery[@]}"} >"$run/analyze.log" 2>&1 || { tail -n 5 "$run/analyze.log"; exit 1; }
  done
}

# final_reports [FRL_DIR]: the Table 1/3-style report (rho against PGD-AT) and, where its runs
# exist, the Table 4 report (PGD-AT with all classes, without the poor ones, without the good ones)
final_reports() {
  local method dirs=() t4=() baseline=()
  for method in standard pgd_at trades1 trades6 fat gairat bat; do
    has_runs "$method" && dirs+=("$OUT/$method")
  done
  [ -n "${1:-}" ] && dirs+=("$1")
  [ -d "$OUT/pgd_at" ] && baseline=(--baseline "$OUT/pgd_at")
  [ ${#dirs[@]} -gt 0 ] && "$PY" -m batlit.report "${dirs[@]}" ${baseline[@]+"${baseline[@]}"} --out "$OUT/report"
  for method in pgd_at table4_wo_poor table4_wo_good; do
    has_runs "$method" && t4+=("$OUT/$method")
  done
  if [ ${#t4[@]} -gt 1 ]; then
    "$PY" -m batlit.report "${t4[@]}" --out "$OUT/report_table4" --no-figures
  fi
}

# finish_study N_SAMPLES FRL_DIR...: after training, FRL's tau on validation (whenever FRL runs are
# in $OUT, so a rerun with METHODS="gairat" still reports FRL), AutoAttack, the analysis with the
# gallery (N_SAMPLES test images) and the reports
finish_study() {
  local samples=$1 frl_dir=""; shift
  if has_runs "$@"; then
    frl_dir=$(choose_frl "$@")
    echo "FRL: chose $frl_dir on the validation split ($OUT/frl_choice.json)"
  fi
  autoattack_final
  analyze_pair "$samples"
  final_reports "$frl_dir"
}
