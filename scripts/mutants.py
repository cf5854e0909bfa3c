#!/usr/bin/env python
"""Mutation check: does the test suite notice a realistic one-line mistake in each module?

Each entry of :data:`MUTANTS` is one single-line mistake in one module of ``src/batlit`` (a
flipped sign or comparison, an off-by-one, a wrong reduction, a dropped call, swapped
arguments, a wrong default) and the narrowest test selection that should catch it. For every
mutant the script

1. copies ``src/``, ``conf/`` and ``pyproject.toml`` into a fresh temporary directory (the real
   ``src/`` is never touched; ``src/batlit/conf`` is a relative symlink to ``../../conf``, and
   ``batlit.config.project_root`` resolves the checkout from the package's own location, so the
   copy is a self-contained checkout);
2. replaces the mutant's snippet there, which must occur exactly once in the file (a snippet that
   a refactor moved or changed is reported as ``error``: update the table);
3. runs ``python -m pytest -x -q -p no:cacheprovider <selection>`` from the repository root (so
   ``tests/conftest.py`` and its helpers are the real ones) with ``PYTHONPATH`` pointing at the
   copy's ``src`` first; the CLI tests' subprocesses inherit it. Before the first mutant the
   script checks that ``import batlit`` in that environment loads the copy.

Outcome per mutant: ``caught`` (the selection fails), ``survived`` (it passes: a gap in the
tests), ``error`` (snippet not found exactly once, or pytest could not run the selection) or
``timeout``. Mutants marked ``equivalent`` (no observable behaviour change, documented with the
reason) are listed but not run unless ``--include-equivalent``. The exit status is 1 when any
mutant run survived, errored or timed out (with ``--check-clean``: when a selection fails on the
real code, which would make its mutants' catches meaningless).

    python scripts/mutants.py                 # every mutant (make mutants)
    python scripts/mutants.py --list          # the table, nothing run; says which snippets moved
    python scripts/mutants.py --only pgd-descends,trades-no-beta
    python scripts/mutants.py --module methods/frl.py --jobs 2
    python scripts/mutants.py --check-clean   # each distinct selection passes on the unmutated copy

docs/testing.md lists the mutants per module and which test catches each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str          # relative to src/batlit
    old: str           # exact source text, unique in the file
    new: str           # its replacement
    what: str          # the mistake, in one line
    tests: tuple[str, ...]   # pytest selection: files or node ids
    k: str | None = None     # optional -k expression
    equivalent: str | None = None  # why the mutant cannot change behaviour (then it is not run)

    def selection(self) -> list[str]:
        return [*self.tests, *(["-k", self.k] if self.k else [])]


def M(id: str, file: str, old: str, new: str, what: str, tests: str | tuple[str, ...], k: str | None = None,
      equivalent: str | None = None) -> Mutant:
    return Mutant(id, file, old, new, what, (tests,) if isinstance(tests, str) else tuple(tests), k, equivalent)


T = "tests/"

# fmt: off
MUTANTS: list[Mutant] = [
    # ---- attacks/pgd.py ---------------------------------------------------------------------------
    M("pgd-descends", "attacks/pgd.py",
      "x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)",
      "x_adv = project(x_adv.detach() - step_size * grad.sign(), x, eps)",
      "PGD steps down the loss instead of up", T + "attacks/test_pgd.py"),
    M("pgd-project-around-iterate", "attacks/pgd.py",
      "x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)",
      "x_adv = project(x_adv.detach() + step_size * grad.sign(), x_adv.detach(), eps)",
      "projection onto the ball around the current iterate instead of around x", T + "attacks/test_pgd.py"),
    M("pgd-one-step-short", "attacks/pgd.py",
      "for k in range(int(steps)):", "for k in range(int(steps) - 1):",
      "off-by-one: PGD-K runs K-1 steps", (T + "attacks/test_pgd.py", T + "methods/test_classwise.py"),
      k="not run_logs and not averaged_model and not sigkill and not command_line and not ddp"),
    M("pgd-kl-target-logprobs", "attacks/pgd.py",
      "return F.softmax(model(x), dim=1)", "return F.log_softmax(model(x), dim=1)",
      "the KL attack's clean target is log-probabilities, not probabilities",
      T + "attacks/test_pgd.py", k="kl_step"),
    M("pgd-cw-sign", "attacks/pgd.py",
      "return -(true - other + confidence).clamp(min=0)", "return (true - other + confidence).clamp(min=0)",
      "CW margin loss with the wrong sign (the attack descends the margin)", T + "cli/test_evaluate_report.py",
      k="cw_margin"),
    M("pgd-cw-confidence", "attacks/pgd.py",
      "CW_CONFIDENCE = 50.0", "CW_CONFIDENCE = 0.0",
      "wrong default κ of the CW loss (0 instead of the FAT/GAIRAT code's 50)", T + "cli/test_evaluate_report.py",
      k="cw_margin"),
    M("pgd-ce-mean", "attacks/pgd.py",
      'return F.cross_entropy(logits_adv, y, reduction="sum")',
      'return F.cross_entropy(logits_adv, y, reduction="mean")',
      "wrong reduction of the attack loss (mean instead of sum)", T + "attacks/test_pgd.py",
      equivalent="sign(∇) of a positively scaled loss is the same: every step is unchanged (fp32 has the range)"),
    # ---- attacks/_common.py -----------------------------------------------------------------------
    M("common-no-box-clamp", "attacks/_common.py",
      "return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)",
      "return torch.minimum(torch.maximum(x_adv, x - eps), x + eps)",
      "dropped call: the projection forgets the [0, 1] box", T + "attacks/test_pgd.py"),
    M("common-uniform-one-sided", "attacks/_common.py",
      "x0 = x + (2 * noise - 1) * eps", "x0 = x + noise * eps",
      "uniform start drawn in [0, ε] instead of [-ε, ε]", T + "attacks/test_pgd.py", k="uniform_start"),
    M("common-eval-mode-not-restored", "attacks/_common.py",
      "            m.training = training", "            m.training = True",
      "eval_mode restores every submodule to train mode instead of its own mode", T + "attacks/test_pgd.py"),
    M("common-eps-zero-refused", "attacks/_common.py",
      "if not eps >= 0:", "if not eps > 0:",
      "flipped comparison: ε = 0 refused", T + "attacks/test_pgd.py"),
    M("common-kl-near-x-none", "attacks/_common.py",
      'return loss == "kl" and init in ("normal", "none")', 'return loss == "kl" and init == "normal"',
      "precision=auto forgets the KL attack started at x itself", T + "attacks/test_attack_precision.py",
      k="resolves_auto"),
    M("common-start-always-projected", "attacks/_common.py",
      "return project(x0, x, eps) if project_start else x0", "return project(x0, x, eps)",
      "the TRADES-lineage start x + 0.001·N is clamped into [0, 1] (project_start ignored)",
      T + "fidelity/test_classwise_authors.py", k="starts_outside"),
    M("common-step-size-zero-allowed", "attacks/_common.py",
      "if not step_size > 0:", "if not step_size >= 0:",
      "flipped comparison: step_size = 0 accepted", T + "attacks/test_pgd.py"),
    # ---- attacks/boundary.py ----------------------------------------------------------------------
    M("boundary-tau-off-by-one", "attacks/boundary.py",
      "fixed = mis & (mis_count == tau + 1)", "fixed = mis & (mis_count == tau)",
      "off-by-one: first_adv at the τ-th instead of the (τ+1)-th misclassified evaluation",
      T + "attacks/test_boundary_pgd.py"),
    M("boundary-last-clean-current", "attacks/boundary.py",
      "last_clean[rows] = torch.where(_bcast(crossed, prev), prev, last_clean[rows])",
      "last_clean[rows] = torch.where(_bcast(crossed, prev), x_k, last_clean[rows])",
      "last_clean takes the first misclassified iterate instead of the one before it", T + "attacks/test_boundary_pgd.py"),
    M("boundary-kappa-counts-fixed", "attacks/boundary.py",
      "correct_a += ~wrong & active", "correct_a += ~wrong",
      "κ keeps counting samples whose first_adv is already fixed", T + "attacks/test_boundary_pgd.py",
      equivalent="a fixed sample stays frozen at the iterate it was misclassified at, so ~wrong is already "
                 "False for it: the & active never removes a count"),
    M("boundary-kstar-plus-one", "attacks/boundary.py",
      "first_mis_a = torch.where(crossed, k, first_mis_a)", "first_mis_a = torch.where(crossed, k + 1, first_mis_a)",
      "off-by-one in k* (steps to the boundary)", T + "attacks/test_boundary_pgd.py"),
    M("boundary-never-flipped", "attacks/boundary.py",
      "never = first_mis_a == K", "never = first_mis_a < K",
      "flipped comparison: last_clean = x_K for samples that did cross", T + "attacks/test_boundary_pgd.py"),
    M("boundary-frozen-swapped", "attacks/boundary.py",
      "x_next = torch.where(_bcast(active, x_k), x_next, x_k)",
      "x_next = torch.where(_bcast(active, x_k), x_k, x_next)",
      "swapped arguments: without compaction the active samples freeze and the fixed ones move",
      T + "attacks/test_boundary_pgd.py"),
    M("boundary-no-step-noise", "attacks/boundary.py",
      "step = step + step_noise_std * torch.randn(", "step = step + 0 * torch.randn(",
      "FAT's step noise ω dropped", T + "attacks/test_boundary_pgd.py"),
    # ---- metrics/classwise.py ---------------------------------------------------------------------
    M("metric-bndy-without-clean", "metrics/classwise.py",
      "boundary = clean_right & (adv != target)", "boundary = adv != target",
      "boundary error counts samples already wrong clean", T + "metrics/test_classwise_robustness.py"),
    M("metric-rob-is-bndy", "metrics/classwise.py",
      'per_class["rob"] = (self.std_errors + self.bndy_errors) / total', 'per_class["rob"] = self.bndy_errors / total',
      "robust error drops the standard errors", T + "metrics/test_classwise_robustness.py"),
    M("metric-unseen-counted", "metrics/classwise.py",
      "seen = self.total > 0", "seen = self.total >= 0",
      "flipped comparison: an unseen class counts as 0 % error in avg", T + "metrics/test_classwise_robustness.py"),
    M("metric-worst-is-min", "metrics/classwise.py",
      'out[f"{name}_worst"] = masked.max().float()', 'out[f"{name}_worst"] = errors[seen].min().float()',
      "worst class taken as the minimum error", T + "metrics/test_classwise_robustness.py"),
    # ---- metrics/steps.py -------------------------------------------------------------------------
    M("steps-never-strict", "metrics/steps.py",
      "(steps >= self.max_steps).long()", "(steps > self.max_steps).long()",
      "flipped comparison: a sample that never crossed (steps == K) is not counted as never",
      T + "metrics/test_steps_to_boundary.py"),
    M("steps-mean-over-classes", "metrics/steps.py",
      '"mean": self.steps_sum.sum() / n,', '"mean": (self.steps_sum / denom).mean(),',
      "wrong reduction: mean steps averaged over classes instead of samples", T + "metrics/test_steps_to_boundary.py"),
    M("steps-per-class-by-total", "metrics/steps.py",
      '"mean_per_class": torch.where(seen, self.steps_sum / denom, nan),',
      '"mean_per_class": torch.where(seen, self.steps_sum / n, nan),',
      "per-class mean divided by all samples instead of the class's", T + "metrics/test_steps_to_boundary.py"),
    # ---- methods/losses.py ------------------------------------------------------------------------
    M("losses-kl-swapped", "methods/losses.py",
      "return F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1),",
      "return F.kl_div(F.log_softmax(p_logits, dim=1), F.log_softmax(q_logits, dim=1),",
      "swapped arguments: KL(q ‖ p) instead of KL(p ‖ q)", T + "methods/test_bat.py"),
    M("losses-kl-mean", "methods/losses.py",
      'reduction="batchmean", log_target=True)', 'reduction="mean", log_target=True)',
      "wrong reduction: KL divided by N·K instead of N", T + "methods/test_bat.py"),
    M("losses-to-uniform-sign", "methods/losses.py",
      "return (log_p.exp() * log_p).sum(dim=1).mean() + math.log(logits.shape[1])",
      "return (log_p.exp() * log_p).sum(dim=1).mean() - math.log(logits.shape[1])",
      "flipped sign of log K in KL(f ‖ U)", T + "methods/test_bat.py"),
    M("losses-from-uniform-sum", "methods/losses.py",
      "return (-log_p.mean(dim=1)).mean() - math.log(logits.shape[1])",
      "return (-log_p.sum(dim=1)).mean() - math.log(logits.shape[1])",
      "wrong reduction: KL(U ‖ f) sums log p over classes instead of averaging", T + "methods/test_bat.py"),
    # ---- methods/base.py --------------------------------------------------------------------------
    M("base-milestone-strict", "methods/base.py",
      "passed = sum(epoch + self.count_from >= m for m in self.milestones)",
      "passed = sum(epoch + self.count_from > m for m in self.milestones)",
      "off-by-one: the lr drops one epoch after the milestone", T + "fidelity/test_recipes.py", k="decay"),
    M("base-factor-index", "methods/base.py",
      "return self.factors[passed - 1] if passed else 1.0", "return self.factors[passed] if passed else 1.0",
      "off-by-one: FAT/GAIRAT's lr factors shifted by one milestone", T + "fidelity/test_recipes.py", k="lr"),
    M("base-eval-attack-train-eps", "methods/base.py",
      "return pgd(self.evaluated_model(), x, y, eps=self.eps,",
      "return pgd(self.evaluated_model(), x, y, eps=self.train_attack[\"eps\"],",
      "validation/test attack at the training attack's ε", T + "methods/test_fat_gairat.py", k="attack_train_eps"),
    M("base-metric-args-swapped", "methods/base.py",
      'getattr(self, f"{phase}_metric").update(model(x), adv_logits, y)',
      'getattr(self, f"{phase}_metric").update(adv_logits, model(x), y)',
      "swapped arguments: clean and adversarial predictions exchanged in the class-wise metric",
      T + "methods/test_plumbing.py", k="validation_step"),
    M("base-no-weight-decay", "methods/base.py",
      'weight_decay=opt_cfg.get("weight_decay", 0.0),\n                                        nesterov',
      'nesterov',
      "dropped argument: SGD ignores optimizer.weight_decay", T + "methods/test_plumbing.py", k="sgd_takes"),
    M("base-confusion-transposed", "methods/base.py",
      'getattr(self, f"{phase}_confusion").update(adv_logits.argmax(1), y)',
      'getattr(self, f"{phase}_confusion").update(y, adv_logits.argmax(1))',
      "swapped arguments: the adversarial confusion matrix transposed (rows = prediction)",
      T + "methods/test_plumbing.py", k="validation_step"),
    # ---- methods/pgd_at.py ------------------------------------------------------------------------
    M("pgdat-no-random-start", "methods/pgd_at.py",
      'return pgd(self.model, x, y, loss="ce", init="uniform", **self.train_attack)',
      'return pgd(self.model, x, y, loss="ce", init="none", **self.train_attack)',
      "wrong option: PGD-AT's attack starts at x instead of a uniform point of the ball",
      T + "methods/test_plumbing.py", k="pgd_at_attacks"),
    M("pgdat-clean-loss", "methods/pgd_at.py",
      'return {"loss": F.cross_entropy(self.model(x_adv), y)}', 'return {"loss": F.cross_entropy(self.model(x), y)}',
      "PGD-AT trains on the clean images", T + "methods/test_fat_gairat.py", k="early_stopped"),
    # ---- methods/trades.py ------------------------------------------------------------------------
    M("trades-no-beta", "methods/trades.py",
      'return {"loss": natural + self.beta * robust, "natural": natural, "robust_kl": robust}',
      'return {"loss": natural + robust, "natural": natural, "robust_kl": robust}',
      "dropped factor β in the TRADES loss", T + "fidelity/test_recipes.py", k="trades_running"),
    M("trades-reuse-flipped", "methods/trades.py",
      "return clean, adv, (clean if reuse_clean else model(x))",
      "return clean, adv, (model(x) if reuse_clean else clean)",
      "reuse_clean_logits inverted: three forwards where two are asked and vice versa",
      T + "fidelity/test_recipes.py", k="trades_running or forward_options"),
    M("trades-adv-first-order", "methods/trades.py",
      "        adv = model(x_adv)\n        clean = model(x)\n        return clean, adv, clean",
      "        clean = model(x)\n        adv = model(x_adv)\n        return clean, adv, clean",
      "adv_first's forwards in the wrong order (BatchNorm statistics differ from DAFA/FAAL's)",
      T + "fidelity/test_classwise_authors.py", k="faal_trades_forwards or dafa_trades_step"),
    M("trades-start-projected", "methods/trades.py",
      'init_std=self.init_std, project_start=False,', 'init_std=self.init_std, project_start=True,',
      "TRADES' KL attack start clamped into [0, 1] (the authors' is not)",
      T + "methods/test_plumbing.py", k="trades_attack"),
    # ---- methods/bat.py ---------------------------------------------------------------------------
    M("bat-ce-on-first-adv", "methods/bat.py",
      'natural, robust = F.cross_entropy(z["last_clean"], y), kl_from_logits(z["x"], z["first_adv"])',
      'natural, robust = F.cross_entropy(z["first_adv"], y), kl_from_logits(z["x"], z["first_adv"])',
      "BAT's CE on first_adv instead of last_clean", T + "methods/test_bat.py"),
    M("bat-alpha-beta-swapped", "methods/bat.py",
      "loss = natural + self.beta * robust + self.alpha * target",
      "loss = natural + self.alpha * robust + self.beta * target",
      "swapped weights α and β", T + "methods/test_bat.py"),
    M("bat-no-steps-metric", "methods/bat.py",
      "            self.steps_to_boundary.update(boundary.steps, y)\n", "",
      "dropped call: the steps-to-boundary statistic is never updated", T + "methods/test_plumbing.py", k="bat_records"),
    M("bat-fixed-source-ce", "methods/bat.py",
      'examples["x_adv"] = pgd(self.model, x, y, loss="kl", init="normal", init_std=self.init_std,',
      'examples["x_adv"] = pgd(self.model, x, y, loss="ce", init="normal", init_std=self.init_std,',
      "the ablation's fixed x_adv from a CE attack instead of TRADES' KL attack",
      T + "methods/test_plumbing.py", k="bat_fixed"),
    # ---- methods/fat.py ---------------------------------------------------------------------------
    M("fat-tau-strict", "methods/fat.py",
      "if epoch >= first_epoch:", "if epoch > first_epoch:",
      "off-by-one: τ changes one epoch after its first epoch", T + "methods/test_fat_gairat.py", k="tau_schedules"),
    M("fat-epoch-zero-based", "methods/fat.py",
      "return tau_at(self.tau_schedule, self.current_epoch + 1)",
      "return tau_at(self.tau_schedule, self.current_epoch)",
      "off-by-one: 0-based epoch read as the authors' 1-based one", T + "methods/test_plumbing.py", k="fat_tau"),
    M("fat-no-omega", "methods/fat.py",
      "init_std=self.init_std, step_noise_std=self.omega, **self.train_attack).first_adv",
      "init_std=self.init_std, **self.train_attack).first_adv",
      "dropped argument: FAT's step noise ω", T + "methods/test_fat_gairat.py", k="early_stopped"),
    M("fat-trades-three-forwards", "methods/fat.py",
      "init_std: float = 0.001, reuse_clean_logits: bool = True, **kwargs) -> None:",
      "init_std: float = 0.001, reuse_clean_logits: bool = False, **kwargs) -> None:",
      "wrong default: FAT for TRADES makes TRADES' three forwards, not its own two",
      T + "fidelity/test_recipes.py", k="trades_running"),
    # ---- methods/gairat.py ------------------------------------------------------------------------
    M("gairat-kappa-sign", "methods/gairat.py",
      "w = (torch.tanh(lam + (half - kappa) * 5 / half) + 1) / 2",
      "w = (torch.tanh(lam + (kappa - half) * 5 / half) + 1) / 2",
      "flipped sign: samples far from the boundary get the large weights", T + "methods/test_fat_gairat.py", k="gair_tanh or gairat_ or gairat]"),
    M("gairat-no-normalise", "methods/gairat.py",
      "return w * len(w) / w.sum()", "return w / w.sum()",
      "weights normalised to sum 1 instead of the batch size", T + "methods/test_fat_gairat.py", k="gair_tanh or gairat_ or gairat]"),
    M("gairat-burn-in-inclusive", "methods/gairat.py",
      "if epoch < self.begin_epoch:", "if epoch <= self.begin_epoch:",
      "off-by-one: weights start one epoch after begin_epoch", T + "methods/test_fat_gairat.py", k="burn_in"),
    M("gairat-linear-sign", "methods/gairat.py",
      "return self.lam_max - epoch / self.trainer.max_epochs * (self.lam_max - self.lam)",
      "return self.lam_max + epoch / self.trainer.max_epochs * (self.lam_max - self.lam)",
      "flipped sign: the linear λ schedule moves away from λ", T + "methods/test_plumbing.py", k="gairat_linear"),
    M("gairat-piecewise-110", "methods/gairat.py",
      "return self.lam - (1.5 if epoch >= 110 else 1.0 if epoch >= 90 else 0.0)",
      "return self.lam - (1.5 if epoch > 110 else 1.0 if epoch >= 90 else 0.0)",
      "off-by-one in the piecewise λ schedule", T + "methods/test_fat_gairat.py", k="burn_in"),
    # ---- methods/classwise.py ---------------------------------------------------------------------
    M("classwise-rank-shard-flipped", "methods/classwise.py",
      "if i % world != rank:", "if i % world == rank:",
      "flipped comparison: each rank attacks the other ranks' validation batches", T + "methods/test_classwise.py",
      k="validation_sums or wat_update"),
    M("classwise-accuracy-over-all", "methods/classwise.py",
      'stats = {"seen": seen, "accuracy": sums["epoch_correct"] / seen}',
      'stats = {"seen": seen, "accuracy": sums["epoch_correct"] / seen.sum()}',
      "wrong reduction: per-class accuracy divided by all samples", T + "methods/test_classwise.py", k="training_examples"),
    M("classwise-record-wrong", "methods/classwise.py",
      "(logits_adv.argmax(1) == y).to(self.epoch_correct.dtype)",
      "(logits_adv.argmax(1) != y).to(self.epoch_correct.dtype)",
      "flipped comparison: errors recorded as correct predictions", T + "methods/test_classwise.py", k="training_examples"),
    M("classwise-kl-mean", "methods/classwise.py",
      '"robust": kl.sum(1),', '"robust": kl.mean(1),',
      "wrong reduction: per-sample KL averaged over classes instead of summed",
      T + "fidelity/test_classwise_authors.py", k="cfa_trades_step"),
    M("classwise-validation-phase", "methods/classwise.py",
      'generator: torch.Generator, phase: str = "test") -> Tensor:',
      'generator: torch.Generator, phase: str = "val") -> Tensor:',
      "wrong default: FRL's validation errors under attack.val instead of attack.test's PGD",
      T + "methods/test_plumbing.py", k="use_attack_test"),
    M("classwise-start-projected", "methods/classwise.py",
      'init_std=self.init_std, project_start=False, **options)',
      'init_std=self.init_std, project_start=True, **options)',
      "the class-wise methods' KL attack start clamped into [0, 1]", T + "fidelity/test_classwise_authors.py",
      k="starts_outside"),
    # ---- methods/frl.py ---------------------------------------------------------------------------
    M("frl-normalize-flipped", "methods/frl.py",
      "return lam * (lim / total) if total > lim else lam", "return lam * (lim / total) if total < lim else lam",
      "flipped comparison: multipliers rescaled when under the bound", T + "methods/test_frl.py", k="normalize"),
    M("frl-weights-sign", "methods/frl.py",
      "return 1 / k + lam - lam.sum() / k", "return 1 / k - lam + lam.sum() / k",
      "flipped sign: classes with large multipliers get small weights", T + "methods/test_frl.py", k="by_hand"),
    M("frl-margin-factor", "methods/frl.py",
      "return torch.exp(2 * lam_eps).clamp(0.98, margin_max)", "return torch.exp(lam_eps).clamp(0.98, margin_max)",
      "dropped factor 2 in the class-wise ε", T + "methods/test_frl.py", k="by_hand"),
    M("frl-bndy-rate", "methods/frl.py",
      "normalize_lambda(self.lambda_bndy + 2 * r1 * gamma_bndy, self.lim)",
      "normalize_lambda(self.lambda_bndy + r1 * gamma_bndy, self.lim)",
      "dropped factor 2 in λ_bndy's update", T + "methods/test_frl.py", k="multiplier_update"),
    M("frl-halving-modulo", "methods/frl.py",
      "r1 = self.rate1 / 2 ** (epoch // self.halve_every)", "r1 = self.rate1 / 2 ** (epoch % self.halve_every)",
      "wrong operator: rate1 halves by epoch modulo instead of every halve_every epochs",
      T + "methods/test_frl.py", k="not fine_tunes"),
    M("frl-bndy-without-clean", "methods/frl.py",
      'return {"std": (~clean_ok).float(), "bndy": (clean_ok & ~adv_ok).float()}',
      'return {"std": (~clean_ok).float(), "bndy": (~adv_ok).float()}',
      "boundary error counts clean errors too", T + "methods/test_plumbing.py", k="boundary_errors"),
    M("frl-step-quarter", "methods/frl.py",
      'return eps * margins[y], eps * margins.max().double() / 4',
      'return eps * margins[y], eps * margins.max().double() / 2',
      "wrong constant: remargin's attack step max ε_c / 2 instead of / 4", T + "methods/test_plumbing.py", k="quarter"),
    M("frl-bndy-mean", "methods/frl.py",
      "boundary_w = (w_bndy * terms[\"robust\"]).sum() / w_bndy.sum()",
      "boundary_w = (w_bndy * terms[\"robust\"]).mean()",
      "wrong reduction: weighted KL averaged instead of normalised by the weights", T + "fidelity/test_recipes.py",
      k="frl_running"),
    # ---- methods/cfa.py ---------------------------------------------------------------------------
    M("cfa-margin-product", "methods/cfa.py",
      "return lambda1 + train_accuracy", "return lambda1 * train_accuracy",
      "wrong operator in CCM: λ1·t_k instead of λ1 + t_k", T + "methods/test_classwise.py", k="cfa_rules"),
    M("cfa-calibrated-inclusive", "methods/cfa.py",
      "return self.current_epoch + 1 > self.begin", "return self.current_epoch + 1 >= self.begin",
      "off-by-one: CCM acts in epoch begin instead of begin + 1", T + "methods/test_classwise.py", k="cfa_margins"),
    M("cfa-no-b-ratio", "methods/cfa.py",
      "        b = b / (1 + b)\n", "",
      "dropped line: TRADES terms weighted by β_y instead of β_y/(1+β_y)", T + "methods/test_classwise.py", k="cfa_margins"),
    M("cfa-average-decay-swapped", "methods/cfa.py",
      "value.mul_(decay).add_(own[name].to(value.dtype), alpha=1 - decay)",
      "value.mul_(1 - decay).add_(own[name].to(value.dtype), alpha=decay)",
      "swapped weights in FAWA's average", T + "fidelity/test_classwise_authors.py", k="fawa"),
    M("cfa-threshold-inclusive", "methods/cfa.py",
      "if worst < self.threshold:", "if worst <= self.threshold:",
      "flipped comparison: a worst class exactly at the threshold does not enter the average",
      T + "fidelity/test_classwise_authors.py", k="fawa"),
    M("cfa-rules-from-begin-plus-one", "methods/cfa.py",
      "if epoch >= self.begin:  # the rules", "if epoch > self.begin:  # the rules",
      "off-by-one: the class-wise rules computed one epoch late", T + "methods/test_classwise.py", k="cfa_margins"),
    # ---- methods/wat.py ---------------------------------------------------------------------------
    M("wat-no-k", "methods/wat.py",
      "return k * torch.softmax(eta * cumulative_loss, dim=0)", "return torch.softmax(eta * cumulative_loss, dim=0)",
      "dropped factor K: the weights sum to 1", T + "methods/test_classwise.py", k="wat_weights"),
    M("wat-no-average-expert", "methods/wat.py",
      "weights = self.weight[y] + self.weight[-1]", "weights = self.weight[y]",
      "the average expert's weight w_K left out of the loss", T + "methods/test_classwise.py", k="wat_update"),
    M("wat-overall-class-mean", "methods/wat.py",
      'return torch.cat([per_class, (sums["loss"].sum() / counts.sum()).view(1)])',
      'return torch.cat([per_class, per_class.mean().view(1)])',
      "wrong reduction: the overall loss as the mean of class means", T + "methods/test_classwise.py", k="validation_sums"),
    M("wat-not-cumulative", "methods/wat.py",
      "self.cumulative_loss.add_(self.validation_losses(epoch))",
      "self.cumulative_loss.copy_(self.validation_losses(epoch))",
      "the losses replace C instead of adding to it", T + "fidelity/test_classwise_authors.py", k="wat"),
    # ---- methods/dafa.py --------------------------------------------------------------------------
    M("dafa-harder-flipped", "methods/dafa.py",
      "harder = diag[:, None] < diag[None, :]", "harder = diag[:, None] > diag[None, :]",
      "flipped comparison: the easier class gains", T + "methods/test_classwise.py", k="dafa_weights"),
    M("dafa-diagonal-kept", "methods/dafa.py",
      "    terms.fill_diagonal_(0.0)\n", "",
      "dropped call: the i = j terms enter the weights", T + "methods/test_classwise.py", k="dafa_weights"),
    M("dafa-step-unscaled", "methods/dafa.py",
      'return self.train_attack["eps"] * w, self.train_attack["step_size"] * w',
      'return self.train_attack["eps"] * w, self.train_attack["step_size"]',
      "the attack step not scaled by W_y", T + "methods/test_classwise.py", k="training_examples"),
    M("dafa-collect-wrong-epoch", "methods/dafa.py",
      "if self.current_epoch + 1 == self.warmup_epoch:", "if self.current_epoch == self.warmup_epoch:",
      "off-by-one: P collected in the epoch after the warm-up", T + "fidelity/test_classwise_authors.py",
      k="dafa_collects"),
    # ---- methods/faal.py --------------------------------------------------------------------------
    M("faal-margin-sign", "methods/faal.py",
      "return other - true", "return true - other",
      "flipped sign of the probability margin", T + "methods/test_classwise.py", k="probability_margins"),
    M("faal-bisection-flipped", "methods/faal.py",
      "too_tight = kl_uniform_to(weights(mid)) > r", "too_tight = kl_uniform_to(weights(mid)) < r",
      "flipped comparison in the bisection on μ", T + "methods/test_classwise.py", k="faal_weights"),
    M("faal-no-k", "methods/faal.py",
      'return {"loss": k * (p[y] * per_sample).mean(),', 'return {"loss": (p[y] * per_sample).mean(),',
      "dropped factor K in the weighted loss", T + "methods/test_classwise.py", k="faal_loss"),
    M("faal-margin-sum", "methods/faal.py",
      "return faal_weights(counts, total / counts.clamp(min=1), self.r)", "return faal_weights(counts, total, self.r)",
      "wrong reduction: summed instead of mean per-class margins", T + "methods/test_classwise.py", k="faal_loss"),
    # ---- methods/hot_start.py ---------------------------------------------------------------------
    M("hot-split-floor", "methods/hot_start.py",
      "n_val = math.ceil(amount * n) if kind == \"fraction\" else int(amount)",
      "n_val = int(amount * n) if kind == \"fraction\" else int(amount)",
      "floor instead of ceil: the recomputed validation split is one image short",
      T + "data/test_data_edges.py", k="fractional"),
    M("hot-overlap-flag-inverted", "methods/hot_start.py",
      "        if not self.allow_val_overlap:\n            raise ConfigError(message)",
      "        if self.allow_val_overlap:\n            raise ConfigError(message)",
      "allow_val_overlap inverted", T + "fidelity/test_recipes.py", k="hot_start_that"),
    M("hot-reported-weights-ignored", "methods/hot_start.py",
      'reported = ckpt["batlit"].get("reported_weights", "model")', 'reported = "model"',
      "a CFA hot start fine-tunes the trained instead of the averaged (reported) weights",
      T + "methods/test_plumbing.py", k="hot_start_loads"),
    M("hot-isin-swapped", "methods/hot_start.py",
      "seen = int(torch.isin(val_idx, hot_train).sum())", "seen = int(torch.isin(hot_train, val_idx).sum())",
      "swapped arguments of isin", T + "fidelity/test_recipes.py", k="hot_start_that",
      equivalent="both index sets are duplicate-free, so the size of val ∩ train is the same either way"),
    # ---- evaluate.py ------------------------------------------------------------------------------
    M("evaluate-attack-everyone", "evaluate.py",
      "robust = clean == y  # only samples still right",
      "robust = torch.ones_like(y, dtype=torch.bool)  # only samples still right",
      "samples wrong on clean images are attacked and can count as robust",
      T + "run/test_evaluate_pieces.py", k="only_samples"),
    M("evaluate-robust-after-first", "evaluate.py",
      "robust_after[i].scatter_add_(0, y, robust.long())", "robust_after[0].scatter_add_(0, y, robust.long())",
      "every component's robust count added to the first component's row",
      T + "run/test_evaluate_pieces.py", k="only_samples"),
    M("evaluate-csv-worst-robust", "evaluate.py",
      'pct(1 - summary["rob_worst"]),\n                    pct(summary["std_worst"])',
      'pct(1 - summary["rob_avg"]),\n                    pct(summary["std_worst"])',
      "the CSV's worst row shows the average robust accuracy", T + "run/test_evaluate_pieces.py", k="csv"),
    M("evaluate-default-step", "evaluate.py",
      "step_size=spec.step_size or eps / 4", "step_size=spec.step_size or eps / 10",
      "wrong default: PGD-20's step ε/10 instead of ε/4", T + "run/test_evaluate_pieces.py", k="quarter_of_eps"),
    M("evaluate-steps-zero", "evaluate.py",
      "if not _is_int(spec.steps) or spec.steps < 1:", "if not _is_int(spec.steps) or spec.steps < 0:",
      "off-by-one: attack.steps=0 accepted", T + "run/test_evaluate_pieces.py", k="steps_below"),
    # ---- analyze.py -------------------------------------------------------------------------------
    M("analyze-diagonal-kept", "analyze.py",
      "    off.fill_diagonal_(0)\n", "",
      "dropped call: correctly classified samples count as adversarial targets", T + "methods/test_bat.py",
      k="target_distribution"),
    M("analyze-tv-no-half", "analyze.py",
      '"tv_to_uniform": float(0.5 * (dist - 1 / k).abs().sum())', '"tv_to_uniform": float((dist - 1 / k).abs().sum())',
      "dropped factor ½ in the total variation", T + "methods/test_bat.py", k="target_distribution"),
    M("analyze-confusion-transposed", "analyze.py",
      "confusion.scatter_add_(0, y * K + adv, torch.ones_like(y))",
      "confusion.scatter_add_(0, adv * K + y, torch.ones_like(y))",
      "swapped arguments: the adversarial confusion matrix transposed", T + "run/test_analyze_stats.py"),
    M("analyze-survival-shifted", "analyze.py",
      "survival = 1 - counts.cumsum(1)[:, :S] / counts.sum(1, keepdim=True).clamp(min=1)",
      "survival = 1 - counts.cumsum(1)[:, 1:] / counts.sum(1, keepdim=True).clamp(min=1)",
      "off-by-one: survival at step k counts the misclassifications of step k + 1", T + "run/test_analyze_stats.py"),
    M("analyze-tau-one", "analyze.py",
      "steps=S, tau=0,", "steps=S, tau=1,",
      "τ = 1 instead of 0 for the source-class statistic", T + "run/test_analyze_stats.py",
      equivalent="k*, the first misclassified evaluation, does not depend on τ; only first_adv does, which "
                 "analyze does not read"),
    # ---- report.py --------------------------------------------------------------------------------
    M("report-rho-sign", "report.py",
      "return (worst_acc - base_worst_acc) / base_worst_acc - (base_acc - acc) / base_acc",
      "return (worst_acc - base_worst_acc) / base_worst_acc + (base_acc - acc) / base_acc",
      "flipped sign in ρ", T + "cli/test_evaluate_report.py", k="rho"),
    M("report-seed-key", "report.py",
      'return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key.rsplit(".", 1)[-1] == "seed"',
      'return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key == "seed"',
      "data.seed splits the seeds of one configuration into groups", T + "run/test_report_numbers.py", k="data_seed"),
    M("report-per-class-first-seed", "report.py",
      "rows = [r.metrics[f\"{metric}_per_class\"] for r in self.runs]",
      "rows = [r.metrics[f\"{metric}_per_class\"] for r in self.runs[:1]]",
      "per-class errors of the first seed instead of the mean over seeds", T + "run/test_report_numbers.py", k="per_class"),
    M("report-cost-median-min", "report.py",
      '"epoch_seconds_median": statistics.median(seconds),', '"epoch_seconds_median": min(seconds),',
      "the median epoch time reported as the fastest", T + "run/test_report_numbers.py", k="cost_table"),
    # ---- reporting.py -----------------------------------------------------------------------------
    M("reporting-nan-kept", "reporting.py",
      "out[key] = [None if math.isnan(v) else v for v in value.tolist()]", "out[key] = value.tolist()",
      "NaN (an unseen class) written into metrics.json instead of null",
      T + "run/test_report_numbers.py", k="results_to_json"),
    M("reporting-table-fraction", "reporting.py",
      'return "-" if v is None else f"{100 * v:.2f}"', 'return "-" if v is None else f"{v:.2f}"',
      "the per-class table prints fractions under a % header", T + "run/test_report_numbers.py", k="percentages"),
    M("reporting-worst-class-index", "reporting.py",
      "out[key] = class_names[int(value)]", "out[key] = int(value)",
      "worst class written as an index instead of its name", T + "run/test_report_numbers.py", k="results_to_json"),
    # ---- callbacks.py -----------------------------------------------------------------------------
    M("callbacks-seed-no-rank", "callbacks.py",
      "int(epoch) * 7_919 + int(rank) * 104_729 + 17", "int(epoch) * 7_919 + 17",
      "dropped term: every DDP rank draws the same stream", T + "run/test_gpu_readiness.py", k="ranks_draw"),
    M("callbacks-guard-finite", "callbacks.py",
      "new = ~torch.isfinite(loss).all() & (self.first_bad[0] < 0)",
      "new = torch.isfinite(loss).all() & (self.first_bad[0] < 0)",
      "flipped condition: the guard stops on a finite loss", T + "run/test_gpu_readiness.py", k="nonfinite_guard"),
    M("callbacks-guard-every", "callbacks.py",
      "every = self.check_every or (1 if loss.device.type == \"cpu\" else 50)",
      "every = self.check_every or 50",
      "wrong default: the CPU guard reads back only every 50 steps (a bad step reaches the weights)",
      T + "run/test_gpu_readiness.py", k="nonfinite_guard"),
    M("callbacks-throughput-pause", "callbacks.py",
      "seconds = self._now(pl_module) - self.start - self.paused",
      "seconds = self._now(pl_module) - self.start + self.paused",
      "flipped sign: validation time added to the training epoch's seconds",
      T + "run/test_callbacks.py", k="throughput"),
    M("callbacks-rows-avg-count", "callbacks.py",
      'rows.append(["avg", sum(summary["count_per_class"]),', 'rows.append(["avg", len(summary["count_per_class"]),',
      "wrong reduction: the avg row counts classes instead of images", T + "run/test_callbacks.py", k="rows"),
    # ---- checkpoint.py ----------------------------------------------------------------------------
    M("ckpt-format-inclusive", "checkpoint.py",
      'record.get("format", 1) > CHECKPOINT_FORMAT:', 'record.get("format", 1) >= CHECKPOINT_FORMAT:',
      "off-by-one: this batlit's own checkpoint format refused", T + "run/test_trust.py", k="real_checkpoint"),
    M("ckpt-interpolation-allowed", "checkpoint.py",
      '        if "${" in node:\n', '        if "${" in node and False:\n',
      "an interpolation in a stored config is no longer refused", T + "run/test_trust.py", k="names_code and evaluate"),
    M("ckpt-resume-check-inverted", "checkpoint.py",
      "if old is not None and new is not None and old != new:",
      "if old is not None and new is not None and old == new:",
      "flipped comparison: resume refuses matching checkpoints", T + "run/test_reliability.py", k="check_resumable"),
    M("ckpt-csv-history-strict", "checkpoint.py",
      'return not row.get("epoch") or int(float(row["epoch"])) <= done_epoch',
      'return not row.get("epoch") or int(float(row["epoch"])) < done_epoch',
      "off-by-one: resume drops the CSV rows of the checkpoint's own epoch", T + "run/test_resume.py", k="keeps_the_rows"),
    M("ckpt-download-forced", "checkpoint.py",
      'kwargs["download"] = bool(download)', 'kwargs["download"] = True',
      "a stored config makes evaluate download data", T + "run/test_trust.py", k="where_data"),
    M("ckpt-no-eval", "checkpoint.py",
      "    model.load_state_dict(state)\n    model.eval()\n", "    model.load_state_dict(state)\n",
      "dropped call: load_run returns the model in train mode (BatchNorm on batch statistics)",
      T + "run/test_trust.py", k="real_checkpoint"),
    # ---- config.py --------------------------------------------------------------------------------
    M("config-kept-classes", "config.py",
      "return len(set(classes))", "return int(total)",
      "data.classes does not shrink the model's class count", T + "data/test_classes.py", k="model_follows"),
    M("config-momentum-one", "config.py",
      'lambda v: 0 <= v < 1, "in [0, 1)")', 'lambda v: 0 <= v <= 1, "in [0, 1)")',
      "off-by-one: optimizer.momentum=1 accepted", T + "run/test_validate.py", k="momentum"),
    M("config-fp16-capability", "config.py",
      'return "16-mixed" if torch.cuda.get_device_capability() >= (7, 0) else "32-true"',
      'return "16-mixed" if torch.cuda.get_device_capability() > (7, 0) else "32-true"',
      "flipped comparison: a V100 (7.0) trains in fp32", T + "run/test_gpu_readiness.py", k="gpu_precision"),
    M("config-bf16-override", "config.py",
      'return forced == "1"', 'return forced == "0"',
      "BATLIT_CPU_BF16 inverted", T + "run/test_fast_paths.py", k="detection"),
    M("config-warmup-inclusive", "config.py",
      "if _is_int(warmup) and _is_int(epochs) and warmup > epochs:",
      "if _is_int(warmup) and _is_int(epochs) and warmup >= epochs:",
      "off-by-one: DAFA's warm-up in the last epoch refused", T + "run/test_validate.py", k="warmup"),
    M("config-num-classes-mismatch", "config.py",
      "if data_k is not None and model_k is not None and data_k != model_k:",
      "if data_k is not None and model_k is not None and data_k == model_k:",
      "flipped comparison: model and data class counts", T + "run/test_validate.py", k="class_counts"),
    # ---- data/base.py -----------------------------------------------------------------------------
    M("data-quota-short", "data/base.py",
      "quota[by_remainder[:short]] += 1", "quota[by_remainder[:short - 1]] += 1",
      "off-by-one: the stratified split is one sample short", T + "data/test_data.py", k="stratified_split"),
    M("data-rank-inclusive", "data/base.py",
      "take = rank < quota[grouped_labels]", "take = rank <= quota[grouped_labels]",
      "off-by-one: each class gives one sample too many", T + "data/test_data.py", k="stratified_split"),
    M("data-crop-offsets", "data/base.py",
      "oy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev)", "oy = torch.randint(0, 2 * pad, (n, 1), device=dev)",
      "off-by-one: the crop never takes the bottom-most offset", T + "data/test_data_edges.py", k="crop"),
    M("data-augment-eval", "data/base.py",
      "if self.trainer is not None and self.trainer.training and self.augment_enabled:",
      "if self.trainer is not None and self.augment_enabled:",
      "dropped condition: validation and test batches are augmented", T + "data/test_data.py", k="only_in_training"),
    M("data-val-floor", "data/base.py",
      "n_val = math.ceil(amount * train_y.numel()) if kind == \"fraction\" else int(amount)",
      "n_val = int(amount * train_y.numel()) if kind == \"fraction\" else int(amount)",
      "floor instead of ceil for a fractional val_size", T + "data/test_data_edges.py", k="fractional"),
    M("data-sampler-same-order", "data/base.py",
      "self.generator = _generator(self.seed, 1_000 + int(epoch))", "self.generator = _generator(self.seed, 1_000)",
      "every epoch sees the same order", T + "data/test_data_edges.py", k="each_epoch"),
    M("data-class-remap", "data/base.py",
      "mask = new >= 0", "mask = new > 0",
      "off-by-one: the first kept class is dropped", T + "data/test_classes.py", k="remaps or by_name"),
    # ---- data/synthetic.py, digits.py, cache.py ---------------------------------------------------
    M("synthetic-seed-ignored", "data/synthetic.py",
      "g = torch.Generator().manual_seed(self.seed)", "g = torch.Generator().manual_seed(0)",
      "data.seed does not change the generated samples", T + "data/test_data.py", k="deterministic_per_seed"),
    M("synthetic-unbalanced", "data/synthetic.py",
      "y = torch.arange(n) % self.generated_classes", "y = torch.arange(n) % (self.generated_classes - 1)",
      "off-by-one: the last class is never generated",
      T + "data/test_data.py", k="synthetic_shapes or deterministic_per_seed"),
    M("digits-scale", "data/digits.py",
      "np.rint(digits.images * (255.0 / 16.0))", "np.rint(digits.images * (256.0 / 16.0))",
      "wrong constant: pixel 16 wraps around to 0 in uint8", T + "data/test_data.py", k="test_digits"),
    M("cache-units", "data/cache.py",
      '_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}',
      '_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}',
      "wrong constant: BATLIT_CACHE_MAX_BYTES=500M read as 10^6 units", T + "data/test_data_cache.py", k="cap_parsing"),
    M("cache-evict-strict", "data/cache.py",
      "            if total <= cap:\n                break", "            if total < cap:\n                break",
      "off-by-one: an entry is evicted when the cache is exactly at the cap", T + "data/test_data_edges.py", k="eviction"),
    # ---- models -----------------------------------------------------------------------------------
    M("normalize-multiply", "models/normalize.py",
      "return (x - self.mean) / self.std", "return (x - self.mean) * self.std",
      "wrong operator: multiplies by std", T + "models/test_models.py", k="normalize"),
    M("small-cnn-pool-floor", "models/small_cnn.py",
      "start, end = (i * n) // out, -((-(i + 1) * n) // out)", "start, end = (i * n) // out, ((i + 1) * n) // out",
      "off-by-one: adaptive pooling windows end at floor instead of ceil", T + "run/test_gpu_readiness.py",
      k="adaptive_average"),
    M("resnet-stride-one", "models/resnet.py",
      "self.layer2 = self._make_layer(2 * width, num_blocks[1], stride=2)",
      "self.layer2 = self._make_layer(2 * width, num_blocks[1], stride=1)",
      "wrong stride: layer2 does not downsample (same parameters, 4x the compute)",
      T + "models/test_architectures.py", k="halve"),
    M("resnet-relu-before-add", "models/resnet.py",
      "return F.relu(out + shortcut)", "return F.relu(out) + shortcut",
      "ReLU before the residual sum instead of after it", T + "models/test_architectures.py", k="relu_of"),
    M("fold-shift-sign", "models/fold.py",
      "shift = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean",
      "shift = bn.running_mean if conv.bias is None else conv.bias - bn.running_mean",
      "flipped sign: the folded bias adds the running mean", T + "models/test_fold.py", k="same_function"),
    M("fold-bias-dropped", "models/fold.py",
      "return conv._conv_forward(x, *folded)", "return conv._conv_forward(x, folded[0], None)",
      "dropped term: the folded convolution without its bias", T + "models/test_fold.py", k="same_function"),
    M("fold-in-training", "models/fold.py",
      "return (isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None",
      "return (isinstance(bn, _BatchNorm) and bn.running_mean is not None",
      "dropped check: training-mode BatchNorm (batch statistics) folded with the running ones",
      T + "models/test_fold.py", k="training_mode"),
    M("fold-nested-refolds", "models/fold.py",
      "and bn.running_var is not None and _FOLDED not in bn.__dict__)", "and bn.running_var is not None)",
      "dropped check: a nested call's exit unfolds the outer call's pairs", T + "models/test_fold.py", k="layout"),
    M("fold-never-restored", "models/fold.py",
      "bn.__dict__.pop(_FOLDED, None)", "bn.__dict__.get(_FOLDED, None)",
      "dropped call: the fold outlives the attack (stale weights after the next training step)",
      T + "models/test_fold.py", k="layout or unless"),
    M("fold-ignores-train-mode", "models/fold.py",
      "if folded is None or bn.training:", "if folded is None:",
      "dropped check: a model switched to train mode inside a fold keeps the running statistics",
      T + "models/test_fold.py", k="training_mode"),
    M("fold-off-in-evaluate", "evaluate.py",
      "    with folded_batchnorm(model):\n        for x, y in bar:",
      "    with folded_batchnorm(torch.nn.Identity()):\n        for x, y in bar:",
      "dropped call: batlit.evaluate's attacks (AutoAttack included) run BatchNorm unfolded",
      T + "models/test_fold.py", k="evaluation"),
    M("fold-off-in-attacks", "attacks/_common.py",
      "with folded_batchnorm(model):", "with nullcontext(model):",
      "dropped call: the attacks run BatchNorm unfolded (the fast path silently off)",
      T + "models/test_fold.py", k="unless"),
    M("wrn-shortcut-input", "models/wide_resnet.py",
      "shortcut = x if self.conv_shortcut is None else self.conv_shortcut(pre)",
      "shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)",
      "the projection shortcut sees x instead of the pre-activated input",
      T + "models/test_architectures.py", k="wide_block"),
    M("wrn-widths", "models/wide_resnet.py",
      "channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]",
      "channels = [16, 16 * widen_factor, 32 * widen_factor, 32 * widen_factor]",
      "wrong constant: the last group 32k channels wide instead of 64k", T + "models/test_models.py", k="output_shape"),
    M("wrn-depth-formula", "models/wide_resnet.py",
      "n = (depth - 4) // 6", "n = (depth - 2) // 6",
      "depth formula (depth - 2) // 6", T + "models/test_models.py", k="output_shape and wrn",
      equivalent="(depth - 4) % 6 == 0 is checked first, so (depth - 2) // 6 == (depth - 4) // 6 for every "
                 "accepted depth"),
    M("preact-shortcut-raw", "models/preact_resnet.py",
      "shortcut = self.shortcut(out) if self.shortcut is not None else x",
      "shortcut = self.shortcut(x) if self.shortcut is not None else x",
      "the projection shortcut sees x instead of the pre-activated input",
      T + "models/test_architectures.py", k="preact_block"),
    # ---- train.py ---------------------------------------------------------------------------------
    M("train-objective-floor-flipped", "train.py",
      "if robust_accuracy < spec.min_robust_accuracy:", "if robust_accuracy > spec.min_robust_accuracy:",
      "flipped comparison: the sweep objective penalises the good runs", T + "cli/test_evaluate_report.py",
      k="objective_floors"),
    M("train-on-device-flipped", "train.py",
      'and trainer.strategy.root_device.type != "cpu"', 'and trainer.strategy.root_device.type == "cpu"',
      "flipped comparison: metrics.json records on_device for CPU runs", T + "run/test_gpu_readiness.py",
      k="record_the_device"),
    M("train-resume-without-file", "train.py",
      'if cfg.get("resume") and last.is_file():', 'if cfg.get("resume"):',
      "resume=true without a last.ckpt resumes from a missing file", T + "run/test_resume.py",
      k="last_ckpt_only"),
    M("train-objective-split", "train.py",
      'source = record.get("val") if spec.split == "val" else record',
      'source = record.get("val") if spec.split != "val" else record',
      "flipped comparison: the sweep objective reads the other split", T + "cli/test_evaluate_report.py",
      k="objective_floors"),
    # ---- cost.py, registry.py, gallery.py ---------------------------------------------------------
    M("cost-validations-every-epoch", "cost.py",
      "total = epochs * train_epoch + (epochs // max(1, val_every)) * val_pass",
      "total = epochs * train_epoch + epochs * val_pass",
      "the estimate counts a validation every epoch whatever check_val_every_n_epoch says",
      T + "run/test_cost.py", k="val_every_epochs"),
    M("cost-long-run-flipped", "cost.py",
      'if device.type == "cpu" and est["total_s"] > LONG_CPU_RUN_HOURS * 3600:',
      'if device.type == "cpu" and est["total_s"] < LONG_CPU_RUN_HOURS * 3600:',
      "flipped comparison: short CPU runs are told to use a GPU", T + "run/test_cost.py", k="long_cpu_run"),
    M("cost-span-minutes", "cost.py",
      'return f"{seconds / 60:.0f} min"', 'return f"{seconds / 60:.1f} min"',
      "wrong format of a minute span", T + "run/test_cost.py", k="long_cpu_run"),
    M("registry-wrn-swapped", "registry.py",
      '"batlit.models.wrn28_10": wrn28_10,', '"batlit.models.wrn28_10": wrn34_10,',
      "the registry builds WRN-34-10 for a WRN-28-10 checkpoint", T + "run/test_registry.py"),
    M("registry-no-logger-group", "registry.py",
      '_GROUPS = ("model", "data", "method", "trainer", "logger")', '_GROUPS = ("model", "data", "method", "trainer")',
      "the logger group's _target_ values are not shipped targets: every real checkpoint is refused",
      T + "run/test_trust.py", k="real_checkpoint"),
    M("gallery-eligible-swapped", "gallery.py",
      "case = (right_pred == labels) & (wrong_pred != labels)",
      "case = (right_pred != labels) & (wrong_pred == labels)",
      "swapped roles: images the baseline gets right and the model wrong", T + "run/test_gallery.py"),
    M("gallery-farthest", "gallery.py",
      "best = torch.topk(d, n, largest=False)", "best = torch.topk(d, n, largest=True)",
      "the farthest training images instead of the nearest", T + "run/test_gallery.py"),
    M("gallery-pick-one-short", "gallery.py",
      "picked = sorted(picked[:n_images], key", "picked = sorted(picked[:n_images - 1], key",
      "off-by-one: one case fewer than n_images", T + "run/test_gallery.py"),
    # ---- bench.py, precision_check.py -------------------------------------------------------------
    M("bench-reference-tau", "bench.py",
      "if count[i] == tau + 1:", "if count[i] == tau:",
      "off-by-one in the reference trajectory's first_adv", T + "cli/test_bench_cli.py", k="reference_trajectory"),
    M("bench-reference-first-step", "bench.py",
      "result[i] = prev[i] if k > 0 else x_k[i]", "result[i] = prev[i]",
      "the k = 0 special case dropped", T + "cli/test_bench_cli.py", k="reference_trajectory",
      equivalent="prev starts as a copy of x_0, so prev[i] is x_k[i] at k = 0"),
    M("bench-ratio-inverted", "bench.py",
      'ratios["bat_over_pgd_at"] = results["bat"]["seconds_per_step"] / results["pgd_at"]["seconds_per_step"]',
      'ratios["bat_over_pgd_at"] = results["pgd_at"]["seconds_per_step"] / results["bat"]["seconds_per_step"]',
      "the BAT/PGD-AT ratio inverted", T + "run/test_bench_choices.py", k="ratios"),
    M("bench-warmup-off-by-one", "bench.py",
      "                if i >= cfg.warmup:", "                if i > cfg.warmup:",
      "off-by-one: the first timed step is dropped with the warm-up", T + "run/test_bench_choices.py", k="warmup"),
    M("bench-auto-switches", "bench.py",
      'precision = ("bf16" if fast else "32") if str(precision) == "auto" else str(precision)',
      'precision = ("32" if fast else "bf16") if str(precision) == "auto" else str(precision)',
      "precision=auto picks bf16 where bf16 is slow", T + "run/test_bench_choices.py", k="auto_switches"),
    M("precision-check-keeps-wrong", "precision_check.py",
      "return model, x[right], y[right]  # flips", "return model, x, y  # flips",
      "the probe keeps images the model already gets wrong", T + "run/test_bench_choices.py", k="probe_keeps"),
    M("precision-check-fp32-attack", "precision_check.py",
      '"bf16 step, fp32 attack": ("fp32", bf16)', '"bf16 step, fp32 attack": ("auto", bf16)',
      "the 'fp32 attack' mode runs precision=auto", T + "run/test_bench_choices.py", k="each_precision_mode"),
]
# fmt: on


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------

class SnippetError(Exception):
    pass


def make_copy(dest: Path) -> Path:
    """A checkout-shaped copy of the package: src/ (conf symlink kept), conf/, pyproject.toml."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(SRC, dest / "src", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest / "src"


def apply(mutant: Mutant, src: Path) -> None:
    path = src / "batlit" / mutant.file
    if not path.is_file():
        raise SnippetError(f"{mutant.id}: no file src/batlit/{mutant.file}")
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SnippetError(f"{mutant.id}: the snippet occurs {count} times in src/batlit/{mutant.file} "
                           f"(expected exactly once): {mutant.old!r}")
    path.write_text(text.replace(mutant.old, mutant.new))


def missing_tests(mutant: Mutant) -> list[str]:
    """The parts of the mutant's selection that name no test file (or no test in it) under ROOT."""
    missing = []
    for part in mutant.tests:
        path, _, node = part.partition("::")
        file = ROOT / path
        if not file.exists():
            missing.append(part)
        elif node and file.is_file():
            name = node.split("::")[-1].split("[")[0]
            if not re.search(rf"^\s*def {re.escape(name)}\(", file.read_text(), re.M):
                missing.append(part)
    return missing


def environment(src: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p),
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("BATLIT_ROOT", None)  # the copy's own checkout is the project root
    return env


def check_import(python: str) -> str:
    """Prove that a copy on PYTHONPATH shadows the installed (editable) batlit; return its path."""
    with tempfile.TemporaryDirectory(prefix="batlit-mutant-check-") as tmp:
        src = make_copy(Path(tmp))
        code = ("import batlit, batlit.config as c; print(batlit.__file__); print(c.project_root()); "
                "import batlit.registry as r; print(r.CONF_DIR / 'train.yaml')")
        out = subprocess.run([python, "-c", code], cwd=ROOT, env=environment(src), capture_output=True, text=True,
                             timeout=300)
        if out.returncode != 0:
            sys.exit(f"mutants: importing batlit from a copy failed:\n{out.stderr[-2000:]}")
        imported, root, conf = out.stdout.split("\n")[:3]
        expected = str((src / "batlit" / "__init__.py").resolve())
        if str(Path(imported).resolve()) != expected:
            sys.exit(f"mutants: PYTHONPATH={src} does not shadow the installed batlit: it imports {imported}")
        if Path(root).resolve() != Path(tmp).resolve() or not Path(conf).is_file():
            sys.exit(f"mutants: the copy resolves its project root to {root} and conf to {conf}, "
                     f"not {tmp}: the copy is not self-contained")
        return imported


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        m = re.match(r"^(FAILED|ERROR) (\S+)", line)
        if m:
            return m.group(2)
    return ""


def run_pytest(python: str, src: Path, selection: list[str], timeout: float) -> tuple[int | None, str, float]:
    """(return code or None on timeout, output, seconds)."""
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=environment(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and any CLI run it started
        out, _ = proc.communicate()
        return None, out, time.perf_counter() - start


@dataclass
class Result:
    mutant: Mutant
    status: str        # caught, survived, error, timeout, equivalent
    seconds: float = 0.0
    detail: str = ""   # the first failing test, or the error


def classify(rc: int | None, output: str) -> tuple[str, str]:
    if rc is None:
        return "timeout", ""
    if rc == 0:
        return "survived", ""
    if rc == 1:
        return "caught", _first_failure(output)
    if rc == 2 and ("error during collection" in output or "errors during collection" in output):
        return "caught", "collection error: " + (_first_failure(output) or "import failed")
    tail = " | ".join(output.strip().splitlines()[-3:])
    return "error", f"pytest exit {rc}: {tail[-300:]}"


def run_mutant(mutant: Mutant, python: str, timeout: float, clean: bool = False) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"batlit-mutant-{mutant.id}-") as tmp:
        src = make_copy(Path(tmp))
        try:
            if not clean:
                apply(mutant, src)
            else:  # the table still has to match the code
                text = (src / "batlit" / mutant.file).read_text() if (src / "batlit" / mutant.file).is_file() else ""
                if text.count(mutant.old) != 1:
                    raise SnippetError(f"{mutant.id}: the snippet occurs {text.count(mutant.old)} times")
        except SnippetError as err:
            return Result(mutant, "error", 0.0, str(err))
        rc, output, seconds = run_pytest(python, src, mutant.selection(), timeout)
    status, detail = classify(rc, output)
    if clean:  # on the real code every selection must pass
        status = {"survived": "passes", "caught": "FAILS"}.get(status, status)
    return Result(mutant, status, seconds, detail)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def select(args: argparse.Namespace) -> list[Mutant]:
    ids = [m.id for m in MUTANTS]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        sys.exit(f"mutants: duplicate ids {dupes}")
    chosen = MUTANTS
    if args.only:
        wanted = [i.strip() for i in args.only.split(",") if i.strip()]
        unknown = [i for i in wanted if i not in ids]
        if unknown:
            sys.exit(f"mutants: unknown id(s) {unknown}; --list shows them")
        chosen = [m for m in MUTANTS if m.id in wanted]
    if args.module:
        chosen = [m for m in chosen if m.file == args.module or m.file.startswith(args.module.rstrip("/") + "/")]
        if not chosen:
            sys.exit(f"mutants: no mutant in {args.module}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the mutants and their test selections, run nothing")
    parser.add_argument("--only", metavar="ID[,ID]", help="run only these mutants")
    parser.add_argument("--module", metavar="FILE", help="run only the mutants of this file under src/batlit "
                        "(e.g. methods/frl.py, or a folder: attacks)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant before it counts as timeout "
                        "(default 300)")
    parser.add_argument("--include-equivalent", action="store_true", help="run the mutants marked equivalent too "
                        "(they are expected to survive; their outcome does not change the exit status)")
    parser.add_argument("--check-clean", action="store_true", help="run each selection on the unmutated copy "
                        "instead: every one must pass (and every snippet must still be found)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    chosen = select(args)

    if args.list:
        rows, stale, unselected = [], 0, 0
        for m in chosen:
            path = SRC / "batlit" / m.file
            found = path.read_text().count(m.old) if path.is_file() else 0
            stale += found != 1
            missing = missing_tests(m)
            unselected += bool(missing)
            rows.append([m.id + ("" if found == 1 else f" [snippet found {found}x]")
                         + (f" [no such test: {' '.join(missing)}]" if missing else ""), m.file,
                         m.what + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""), " ".join(m.selection())])
        print(_table(rows, ["id", "file", "mistake", "selection"]))
        print(f"\n{len(chosen)} mutants ({sum(1 for m in chosen if m.equivalent)} marked equivalent)"
              + (f"; {stale} whose snippet is not found exactly once in src/batlit" if stale else "")
              + (f"; {unselected} whose test selection names a missing file or test" if unselected else ""))
        return 1 if stale or unselected else 0

    gone = {m.id: missing_tests(m) for m in chosen if missing_tests(m)}
    if gone:
        sys.exit("mutants: test selections name missing files or tests (tests moved? update the table): "
                 + "; ".join(f"{i}: {' '.join(parts)}" for i, parts in gone.items()))

    python = sys.executable
    imported = check_import(python)
    print(f"mutants: a copy on PYTHONPATH is what the tests import ({imported})", flush=True)
    to_run = [m for m in chosen if args.include_equivalent or args.check_clean or not m.equivalent]
    results: list[Result] = [Result(m, "equivalent", 0.0, m.equivalent or "") for m in chosen if m not in to_run]
    start = time.perf_counter()

    def one(m: Mutant) -> Result:
        r = run_mutant(m, python, args.timeout, clean=args.check_clean)
        if m.equivalent and r.status in ("survived", "caught"):
            r.status = "equivalent" if r.status == "survived" else "caught"
        where = f"  {r.detail}" if r.detail else ""
        print(f"{r.status:<10} {m.id:<28} {r.seconds:6.1f} s{where}", flush=True)
        return r

    if args.check_clean:  # each distinct selection once; its mutants share the outcome (snippets checked apart)
        firsts: dict[tuple[str, ...], Mutant] = {}
        for m in to_run:
            firsts.setdefault(tuple(m.selection()), m)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            ran = dict(zip(firsts, pool.map(one, firsts.values())))
        for m in to_run:
            first = ran[tuple(m.selection())]
            if first.mutant is m:
                results.append(first)
                continue
            path = SRC / "batlit" / m.file
            found = path.read_text().count(m.old) if path.is_file() else 0
            results.append(Result(m, first.status if found == 1 else "error", 0.0,
                                  f"as {first.mutant.id}" if found == 1 else f"the snippet occurs {found} times"))
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results += list(pool.map(one, to_run))
    total = time.perf_counter() - start
    order = {m.id: i for i, m in enumerate(MUTANTS)}
    results.sort(key=lambda r: order[r.mutant.id])

    rows = [[r.mutant.id, r.mutant.file, r.status, f"{r.seconds:.1f}", r.detail or " ".join(r.mutant.selection())]
            for r in results]
    print()
    print(_table(rows, ["id", "file", "status", "s", "caught by / detail"]))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"\n{len(results)} mutants: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f"; {total:.0f} s wall-clock with --jobs {args.jobs}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"seconds": total, "jobs": args.jobs, "check_clean": args.check_clean,
             "results": [{"id": r.mutant.id, "file": r.mutant.file, "what": r.mutant.what, "status": r.status,
                          "seconds": round(r.seconds, 1), "detail": r.detail,
                          "selection": r.mutant.selection()} for r in results]}, indent=2))
    bad = {"survived", "error", "timeout", "FAILS"}
    return 1 if any(r.status in bad for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
