#!/usr/bin/env python
"""Mutation check: does the test suite notice a realistic one-line mistake in each module?

Each entry of :data:`MUTANTS` is one small mistake in ``src/batlit`` (a flipped sign or
comparison, an off-by-one, a wrong reduction, a dropped call, swapped arguments, a wrong default)
and the narrowest test selection that should catch it. An entry finds its code by AST, not by
text: ``where`` names the enclosing function, method or class by qualified name (``pgd``,
``PGDAT.objective``) or a module-level name, looked up in every module of the package (so code
that moves between modules is still found; ``"module.py:name"`` picks one module when the name is
in several); ``node`` is the expression, statement(s), keyword argument or parameter to change,
which must occur exactly once within ``where``, compared by ``ast.unparse`` (so formatting,
quotes and redundant parentheses do not matter); ``new`` is the source that replaces exactly
that node's span (``""`` deletes a statement with its lines, a keyword argument with its comma).
For every mutant the script

1. copies ``src/``, ``conf/`` and ``pyproject.toml`` into a fresh temporary directory (the real
   ``src/`` is never touched; ``src/batlit/conf`` is a relative symlink to ``../../conf``, and
   ``batlit.config.project_root`` resolves the checkout from the package's own location, so the
   copy is a self-contained checkout);
2. locates the node there and replaces its source span (lineno/col_offset to end_lineno/
   end_col_offset); an entry that no longer locates (its function is gone, or its node is missing
   or not unique) is reported as ``error``: re-target it, usually by editing ``where``;
3. runs ``python -m pytest -x -q -p no:cacheprovider <selection>`` from the repository root (so
   ``tests/conftest.py`` and its helpers are the real ones) with ``PYTHONPATH`` pointing at the
   copy's ``src`` first; the CLI tests' subprocesses inherit it. Before the first mutant the
   script checks that ``import batlit`` in that environment loads the copy.

Outcome per mutant: ``caught`` (the selection fails), ``survived`` (it passes: a gap in the
tests), ``error`` (the node does not locate exactly once, or pytest could not run the selection) or
``timeout``. Mutants marked ``equivalent`` (no observable behaviour change, documented with the
reason) are listed but not run unless ``--include-equivalent``. The exit status is 1 when any
mutant run survived, errored or timed out (with ``--check-clean``: when a selection fails on the
real code, which would make its mutants' catches meaningless).

    python scripts/mutants.py                 # every mutant (make mutants)
    python scripts/mutants.py --list          # the table, nothing run; says which entries no longer locate
    python scripts/mutants.py --only pgd-descends,trades-no-beta
    python scripts/mutants.py --module methods/frl.py --jobs 2
    python scripts/mutants.py --check-clean   # each distinct selection passes on the unmutated copy

docs/testing.md lists the mutants per module and which test catches each.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@dataclass(frozen=True)
class Mutant:
    id: str
    where: str         # the enclosing function, method or class by qualified name ("pgd", "PGDAT.objective"),
                       # or a module-level name ("CW_CONFIDENCE"), found in any module of src/batlit;
                       # "path.py:name" picks the module where a name is in several ("evaluate.py:run")
    node: str          # the expression, statement or parameter to change, as source: unique within `where`,
                       # compared by ast.unparse (formatting, quotes and parentheses do not matter)
    new: str           # its replacement source ("" deletes the statement and its lines, or the keyword
                       # argument and its comma)
    what: str          # the mistake, in one line
    tests: tuple[str, ...]   # pytest selection: files or node ids
    k: str | None = None     # optional -k expression
    equivalent: str | None = None  # why the mutant cannot change behaviour (then it is not run)

    def selection(self) -> list[str]:
        return [*self.tests, *(["-k", self.k] if self.k else [])]


def M(id: str, where: str, node: str, new: str, what: str, tests: str | tuple[str, ...], k: str | None = None,
      equivalent: str | None = None) -> Mutant:
    return Mutant(id, where, node, new, what, (tests,) if isinstance(tests, str) else tuple(tests), k, equivalent)



T = "tests/"

# fmt: off
MUTANTS: list[Mutant] = [
    # ---- attacks/pgd.py ---------------------------------------------------------------------------
    M("pgd-descends", "pgd",
      "x_adv.detach() + step_size * grad.sign()", "x_adv.detach() - step_size * grad.sign()",
      "PGD steps down the loss instead of up", T + "attacks/test_pgd.py"),
    M("pgd-project-around-iterate", "pgd",
      "project(x_adv.detach() + step_size * grad.sign(), x, eps)",
      "project(x_adv.detach() + step_size * grad.sign(), x_adv.detach(), eps)",
      "projection onto the ball around the current iterate instead of around x", T + "attacks/test_pgd.py"),
    M("pgd-one-step-short", "pgd",
      "int(steps)", "int(steps) - 1",
      "off-by-one: PGD-K runs K-1 steps", (T + "attacks/test_pgd.py", T + "methods/test_classwise.py"),
      k="not run_logs and not averaged_model and not sigkill and not command_line and not ddp"),
    M("pgd-kl-target-logprobs", "clean_probabilities",
      "F.softmax(model(x), dim=1)", "F.log_softmax(model(x), dim=1)",
      "the KL attack's clean target is log-probabilities, not probabilities",
      T + "attacks/test_pgd.py", k="kl_step"),
    M("pgd-cw-sign", "cw_margin",
      "-(true - other + confidence).clamp(min=0)", "(true - other + confidence).clamp(min=0)",
      "CW margin loss with the wrong sign (the attack descends the margin)", T + "cli/test_evaluate_report.py",
      k="cw_margin"),
    M("pgd-cw-confidence", "CW_CONFIDENCE",
      "CW_CONFIDENCE = 50.0", "CW_CONFIDENCE = 0.0",
      "wrong default κ of the CW loss (0 instead of the FAT/GAIRAT code's 50)", T + "cli/test_evaluate_report.py",
      k="cw_margin"),
    M("pgd-ce-mean", "attack_loss",
      'F.cross_entropy(logits_adv, y, reduction="sum")', 'F.cross_entropy(logits_adv, y, reduction="mean")',
      "wrong reduction of the attack loss (mean instead of sum)", T + "attacks/test_pgd.py",
      equivalent="sign(∇) of a positively scaled loss is the same: every step is unchanged (fp32 has the range)"),
    # ---- attacks/_common.py -----------------------------------------------------------------------
    M("common-no-box-clamp", "project",
      "torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)",
      "torch.minimum(torch.maximum(x_adv, x - eps), x + eps)",
      "dropped call: the projection forgets the [0, 1] box", T + "attacks/test_pgd.py"),
    M("common-uniform-one-sided", "random_start",
      "(2 * noise - 1) * eps", "noise * eps",
      "uniform start drawn in [0, ε] instead of [-ε, ε]", T + "attacks/test_pgd.py", k="uniform_start"),
    M("common-eval-mode-not-restored", "eval_mode",
      "m.training = training", "m.training = True",
      "eval_mode restores every submodule to train mode instead of its own mode", T + "attacks/test_pgd.py"),
    M("common-eps-zero-refused", "check_threat_model",
      "eps >= 0", "eps > 0",
      "flipped comparison: ε = 0 refused", T + "attacks/test_pgd.py"),
    M("common-kl-near-x-none", "kl_near_x",
      'init in ("normal", "none")', 'init == "normal"',
      "precision=auto forgets the KL attack started at x itself", T + "attacks/test_attack_precision.py",
      k="resolves_auto"),
    M("common-start-always-projected", "random_start",
      "project(x0, x, eps) if project_start else x0", "project(x0, x, eps)",
      "the TRADES-lineage start x + 0.001·N is clamped into [0, 1] (project_start ignored)",
      T + "fidelity/test_classwise_authors.py", k="starts_outside"),
    M("common-step-size-zero-allowed", "check_threat_model",
      "step_size > 0", "step_size >= 0",
      "flipped comparison: step_size = 0 accepted", T + "attacks/test_pgd.py"),
    # ---- attacks/boundary.py ----------------------------------------------------------------------
    M("boundary-tau-off-by-one", "boundary_pgd",
      "tau + 1", "tau",
      "off-by-one: first_adv at the τ-th instead of the (τ+1)-th misclassified evaluation",
      T + "attacks/test_boundary_pgd.py"),
    M("boundary-last-clean-current", "boundary_pgd",
      "torch.where(_bcast(crossed, prev), prev, last_clean[rows])",
      "torch.where(_bcast(crossed, prev), x_k, last_clean[rows])",
      "last_clean takes the first misclassified iterate instead of the one before it", T + "attacks/test_boundary_pgd.py"),
    M("boundary-kappa-counts-fixed", "boundary_pgd",
      "~wrong & active", "~wrong",
      "κ keeps counting samples whose first_adv is already fixed", T + "attacks/test_boundary_pgd.py",
      equivalent="a fixed sample stays frozen at the iterate it was misclassified at, so ~wrong is already "
                 "False for it: the & active never removes a count"),
    M("boundary-kstar-plus-one", "boundary_pgd",
      "torch.where(crossed, k, first_mis_a)", "torch.where(crossed, k + 1, first_mis_a)",
      "off-by-one in k* (steps to the boundary)", T + "attacks/test_boundary_pgd.py"),
    M("boundary-never-flipped", "boundary_pgd",
      "never = first_mis_a == K", "never = first_mis_a < K",
      "flipped comparison: last_clean = x_K for samples that did cross", T + "attacks/test_boundary_pgd.py"),
    M("boundary-frozen-swapped", "boundary_pgd",
      "torch.where(_bcast(active, x_k), x_next, x_k)", "torch.where(_bcast(active, x_k), x_k, x_next)",
      "swapped arguments: without compaction the active samples freeze and the fixed ones move",
      T + "attacks/test_boundary_pgd.py"),
    M("boundary-no-step-noise", "boundary_pgd",
      "step_noise_std * torch.randn(x_k.shape, generator=generator, device=x_k.device, dtype=x_k.dtype)",
      "0 * torch.randn(\n                        x_k.shape, generator=generator, device=x_k.device, dtype=x_k.dtype)",
      "FAT's step noise ω dropped", T + "attacks/test_boundary_pgd.py"),
    # ---- metrics/classwise.py ---------------------------------------------------------------------
    M("metric-bndy-without-clean", "ClassWiseRobustness.update",
      "clean_right & (adv != target)", "adv != target",
      "boundary error counts samples already wrong clean", T + "metrics/test_classwise_robustness.py"),
    M("metric-rob-is-bndy", "ClassWiseRobustness.compute",
      "(self.std_errors + self.bndy_errors) / total", "self.bndy_errors / total",
      "robust error drops the standard errors", T + "metrics/test_classwise_robustness.py"),
    M("metric-unseen-counted", "ClassWiseRobustness.compute",
      "self.total > 0", "self.total >= 0",
      "flipped comparison: an unseen class counts as 0 % error in avg", T + "metrics/test_classwise_robustness.py"),
    M("metric-worst-is-min", "ClassWiseRobustness.compute",
      "masked.max()", "errors[seen].min()",
      "worst class taken as the minimum error", T + "metrics/test_classwise_robustness.py"),
    # ---- metrics/steps.py -------------------------------------------------------------------------
    M("steps-never-strict", "StepsToBoundary.update",
      "steps >= self.max_steps", "steps > self.max_steps",
      "flipped comparison: a sample that never crossed (steps == K) is not counted as never",
      T + "metrics/test_steps_to_boundary.py"),
    M("steps-mean-over-classes", "StepsToBoundary.compute",
      "self.steps_sum.sum() / n", "(self.steps_sum / denom).mean()",
      "wrong reduction: mean steps averaged over classes instead of samples", T + "metrics/test_steps_to_boundary.py"),
    M("steps-per-class-by-total", "StepsToBoundary.compute",
      "self.steps_sum / denom", "self.steps_sum / n",
      "per-class mean divided by all samples instead of the class's", T + "metrics/test_steps_to_boundary.py"),
    # ---- methods/losses.py ------------------------------------------------------------------------
    M("losses-kl-swapped", "kl_from_logits",
      "F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1), reduction='batchmean', log_target=True)",
      "F.kl_div(F.log_softmax(p_logits, dim=1), F.log_softmax(q_logits, dim=1),\n                    reduction=\"batchmean\", log_target=True)",
      "swapped arguments: KL(q ‖ p) instead of KL(p ‖ q)", T + "methods/test_bat.py"),
    M("losses-kl-mean", "kl_from_logits",
      'reduction="batchmean"', 'reduction="mean"',
      "wrong reduction: KL divided by N·K instead of N", T + "methods/test_bat.py"),
    M("losses-to-uniform-sign", "kl_to_uniform",
      "(log_p.exp() * log_p).sum(dim=1).mean() + math.log(logits.shape[1])",
      "(log_p.exp() * log_p).sum(dim=1).mean() - math.log(logits.shape[1])",
      "flipped sign of log K in KL(f ‖ U)", T + "methods/test_bat.py"),
    M("losses-from-uniform-sum", "kl_from_uniform",
      "log_p.mean(dim=1)", "log_p.sum(dim=1)",
      "wrong reduction: KL(U ‖ f) sums log p over classes instead of averaging", T + "methods/test_bat.py"),
    # ---- methods/base.py --------------------------------------------------------------------------
    M("base-milestone-strict", "StepDecay.__call__",
      "epoch + self.count_from >= m", "epoch + self.count_from > m",
      "off-by-one: the lr drops one epoch after the milestone", T + "fidelity/test_recipes.py", k="decay"),
    M("base-factor-index", "StepDecay.__call__",
      "passed - 1", "passed",
      "off-by-one: FAT/GAIRAT's lr factors shifted by one milestone", T + "fidelity/test_recipes.py", k="lr"),
    M("base-eval-attack-train-eps", "AdversarialMethod.evaluation_attack",
      "eps=self.eps", 'eps=self.train_attack["eps"]',
      "validation/test attack at the training attack's ε", T + "methods/test_fat_gairat.py", k="attack_train_eps"),
    M("base-metric-args-swapped", "AdversarialMethod._robustness_step",
      'getattr(self, f"{phase}_metric").update(model(x), adv_logits, y)',
      'getattr(self, f"{phase}_metric").update(adv_logits, model(x), y)',
      "swapped arguments: clean and adversarial predictions exchanged in the class-wise metric",
      T + "methods/test_plumbing.py", k="validation_step"),
    M("base-rules-unchecked", "AdversarialMethod.__init__",
      "registry.check_hparams(type(self), self.hparams)", "",
      "dropped call: a method built in Python skips its declared hparam_rules",
      T + "methods/test_method_registry.py", k="constructor_checks"),
    M("base-no-weight-decay", "AdversarialMethod.configure_optimizers",
      "torch.optim.SGD(params, lr=opt_cfg['lr'], momentum=opt_cfg.get('momentum', 0.9), weight_decay=opt_cfg.get('weight_decay', 0.0), nesterov=opt_cfg.get('nesterov', False))",
      "torch.optim.SGD(params, lr=opt_cfg[\"lr\"], momentum=opt_cfg.get(\"momentum\", 0.9),\n                                        nesterov=opt_cfg.get(\"nesterov\", False))",
      "dropped argument: SGD ignores optimizer.weight_decay", T + "methods/test_plumbing.py", k="sgd_takes"),
    M("base-confusion-transposed", "AdversarialMethod._robustness_step",
      'getattr(self, f"{phase}_confusion").update(adv_logits.argmax(1), y)',
      'getattr(self, f"{phase}_confusion").update(y, adv_logits.argmax(1))',
      "swapped arguments: the adversarial confusion matrix transposed (rows = prediction)",
      T + "methods/test_plumbing.py", k="validation_step"),
    # ---- methods/pgd_at.py ------------------------------------------------------------------------
    M("pgdat-no-random-start", "PGDATObjective",
      '"uniform"', '"none"',
      "wrong option: PGD-AT's attack starts at x instead of a uniform point of the ball",
      T + "methods/test_plumbing.py", k="pgd_at_attacks"),
    M("pgdat-clean-loss", "PGDATObjective.loss",
      "model(x_adv)", "model(x)",
      "PGD-AT trains on the clean images", T + "methods/test_fat_gairat.py", k="early_stopped"),
    # ---- methods/trades.py ------------------------------------------------------------------------
    M("trades-no-beta", "TRADESObjective.loss",
      "self.beta * robust", "robust",
      "dropped factor β in the TRADES loss", T + "fidelity/test_recipes.py", k="trades_running"),
    M("trades-reuse-flipped", "trades_logits",
      "clean if reuse_clean else model(x)", "model(x) if reuse_clean else clean",
      "reuse_clean_logits inverted: three forwards where two are asked and vice versa",
      T + "fidelity/test_recipes.py", k="trades_running or forward_options"),
    M("trades-adv-first-order", "trades_logits",
      "adv = model(x_adv)\nclean = model(x)", "clean = model(x)\n        adv = model(x_adv)",
      "adv_first's forwards in the wrong order (BatchNorm statistics differ from DAFA/FAAL's)",
      T + "fidelity/test_classwise_authors.py", k="faal_trades_forwards or dafa_trades_step"),
    M("trades-start-projected", "trades_attack",
      "project_start: bool = False", "project_start: bool = True",
      "TRADES' KL attack start clamped into [0, 1] (the authors' is not)",
      T + "methods/test_plumbing.py", k="trades_attack"),
    # ---- methods/bat.py ---------------------------------------------------------------------------
    M("bat-ce-on-first-adv", "BAT.objective",
      'z["last_clean"]', 'z["first_adv"]',
      "BAT's CE on first_adv instead of last_clean", T + "methods/test_bat.py"),
    M("bat-alpha-beta-swapped", "BAT.objective",
      "natural + self.beta * robust + self.alpha * target", "natural + self.alpha * robust + self.beta * target",
      "swapped weights α and β", T + "methods/test_bat.py"),
    M("bat-no-steps-metric", "BAT.perturb",
      "self.steps_to_boundary.update(boundary.steps, y)", "",
      "dropped call: the steps-to-boundary statistic is never updated", T + "methods/test_plumbing.py", k="bat_records"),
    M("bat-fixed-source-ce", "trades_attack",
      'loss="kl"', 'loss="ce"',
      "the ablation's fixed x_adv from a CE attack instead of TRADES' KL attack",
      T + "methods/test_plumbing.py", k="bat_fixed"),
    # ---- methods/fat.py ---------------------------------------------------------------------------
    M("fat-tau-strict", "tau_at",
      "epoch >= first_epoch", "epoch > first_epoch",
      "off-by-one: τ changes one epoch after its first epoch", T + "methods/test_fat_gairat.py", k="tau_schedules"),
    M("fat-epoch-zero-based", "AdversarialMethod.epoch",
      "self.current_epoch + 1", "self.current_epoch",
      "off-by-one: 0-based epoch read as the authors' 1-based one", T + "methods/test_plumbing.py", k="fat_tau"),
    M("fat-no-omega", "FriendlyAttack.perturb",
      "step_noise_std=self.omega", "",
      "dropped argument: FAT's step noise ω", T + "methods/test_fat_gairat.py", k="early_stopped"),
    M("fat-trades-three-forwards", "FATTRADES.__init__",
      "reuse_clean_logits: bool = True", "reuse_clean_logits: bool = False",
      "wrong default: FAT for TRADES makes TRADES' three forwards, not its own two",
      T + "fidelity/test_recipes.py", k="trades_running"),
    # ---- methods/gairat.py ------------------------------------------------------------------------
    M("gairat-kappa-sign", "gair_weights",
      "torch.tanh(lam + (half - kappa) * 5 / half)", "torch.tanh(lam + (kappa - half) * 5 / half)",
      "flipped sign: samples far from the boundary get the large weights", T + "methods/test_fat_gairat.py", k="gair_tanh or gairat_ or gairat]"),
    M("gairat-no-normalise", "gair_weights",
      "w * len(w) / w.sum()", "w / w.sum()",
      "weights normalised to sum 1 instead of the batch size", T + "methods/test_fat_gairat.py", k="gair_tanh or gairat_ or gairat]"),
    M("gairat-burn-in-inclusive", "GAIRAT.objective",
      "self.epoch < self.begin_epoch", "self.epoch <= self.begin_epoch",
      "off-by-one: weights start one epoch after begin_epoch", T + "methods/test_fat_gairat.py", k="burn_in"),
    M("gairat-linear-sign", "GAIRAT.lam_at",
      "self.lam_max - epoch / self.trainer.max_epochs * (self.lam_max - self.lam)",
      "self.lam_max + epoch / self.trainer.max_epochs * (self.lam_max - self.lam)",
      "flipped sign: the linear λ schedule moves away from λ", T + "methods/test_plumbing.py", k="gairat_linear"),
    M("gairat-piecewise-110", "GAIRAT.lam_at",
      "epoch >= 110", "epoch > 110",
      "off-by-one in the piecewise λ schedule", T + "methods/test_fat_gairat.py", k="burn_in"),
    # ---- methods/classwise.py ---------------------------------------------------------------------
    M("classwise-rank-shard-flipped", "ClassWiseMethod.validation_sums",
      "i % world != rank", "i % world == rank",
      "flipped comparison: each rank attacks the other ranks' validation batches", T + "methods/test_classwise.py",
      k="validation_sums or wat_update"),
    M("classwise-accuracy-over-all", "ClassWiseMethod.epoch_statistics",
      'sums["epoch_correct"] / seen', 'sums["epoch_correct"] / seen.sum()',
      "wrong reduction: per-class accuracy divided by all samples", T + "methods/test_classwise.py", k="training_examples"),
    M("classwise-record-wrong", "ClassWiseMethod.record_training_examples",
      "logits_adv.argmax(1) == y", "logits_adv.argmax(1) != y",
      "flipped comparison: errors recorded as correct predictions", T + "methods/test_classwise.py", k="training_examples"),
    M("classwise-kl-mean", "per_sample_kl",
      'F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1), reduction="none", '
      'log_target=True).sum(1)',
      'F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1), reduction="none", '
      'log_target=True).mean(1)',
      "wrong reduction: per-sample KL averaged over classes instead of summed",
      T + "fidelity/test_classwise_authors.py", k="cfa_trades_step"),
    M("classwise-validation-phase", "ClassWiseMethod.validation_attack",
      'phase: str = "test"', 'phase: str = "val"',
      "wrong default: FRL's validation errors under attack.val instead of attack.test's PGD",
      T + "methods/test_plumbing.py", k="use_attack_test"),
    M("classwise-start-projected", "TRADESObjective.attack",
      "trades_attack(model, x, y, init_std=self.init_std, **budget)",
      "trades_attack(model, x, y, init_std=self.init_std, project_start=True, **budget)",
      "the class-wise methods' KL attack start clamped into [0, 1]", T + "fidelity/test_classwise_authors.py",
      k="starts_outside"),
    # ---- methods/frl.py ---------------------------------------------------------------------------
    M("frl-normalize-flipped", "normalize_lambda",
      "total > lim", "total < lim",
      "flipped comparison: multipliers rescaled when under the bound", T + "methods/test_frl.py", k="normalize"),
    M("frl-weights-sign", "class_weights",
      "1 / k + lam - lam.sum() / k", "1 / k - lam + lam.sum() / k",
      "flipped sign: classes with large multipliers get small weights", T + "methods/test_frl.py", k="by_hand"),
    M("frl-margin-factor", "class_margins",
      "2 * lam_eps", "lam_eps",
      "dropped factor 2 in the class-wise ε", T + "methods/test_frl.py", k="by_hand"),
    M("frl-bndy-rate", "FRL.update_multipliers",
      "2 * r1", "r1",
      "dropped factor 2 in λ_bndy's update", T + "methods/test_frl.py", k="multiplier_update"),
    M("frl-halving-modulo", "FRL.update_multipliers",
      "epoch // self.halve_every", "epoch % self.halve_every",
      "wrong operator: rate1 halves by epoch modulo instead of every halve_every epochs",
      T + "methods/test_frl.py", k="not fine_tunes"),
    M("frl-bndy-without-clean", "FRL.validation_errors.errors",
      "clean_ok & ~adv_ok", "~adv_ok",
      "boundary error counts clean errors too", T + "methods/test_plumbing.py", k="boundary_errors"),
    M("frl-step-quarter", "FRL.step_scale_for",
      "class_margins(self.lambda_eps, self.margin_max).max().double() / 4",
      "class_margins(self.lambda_eps, self.margin_max).max().double() / 2",
      "wrong constant: remargin's attack step max ε_c / 2 instead of / 4", T + "methods/test_plumbing.py", k="quarter"),
    M("frl-bndy-mean", "LossWeights.reduce",
      "(weights * values).sum() / weights.sum()", "(weights * values).mean()",
      "wrong reduction: weighted KL averaged instead of normalised by the weights", T + "fidelity/test_recipes.py",
      k="frl_running"),
    # ---- methods/cfa.py ---------------------------------------------------------------------------
    M("cfa-margin-product", "cfa_margins",
      "lambda1 + train_accuracy", "lambda1 * train_accuracy",
      "wrong operator in CCM: λ1·t_k instead of λ1 + t_k", T + "methods/test_classwise.py", k="cfa_rules"),
    M("cfa-calibrated-inclusive", "CFA.eps_scale_for",
      "self.epoch > self.begin", "self.epoch >= self.begin",
      "off-by-one: CCM acts in epoch begin instead of begin + 1", T + "methods/test_classwise.py", k="cfa_margins"),
    M("cfa-no-b-ratio", "CFA.loss_weights_for",
      "b = b / (1 + b)", "",
      "dropped line: TRADES terms weighted by β_y instead of β_y/(1+β_y)", T + "methods/test_classwise.py", k="cfa_margins"),
    M("cfa-average-decay-swapped", "weight_average",
      "value.mul_(decay).add_(own[name].to(value.dtype), alpha=1 - decay)",
      "value.mul_(1 - decay).add_(own[name].to(value.dtype), alpha=decay)",
      "swapped weights in FAWA's average", T + "fidelity/test_classwise_authors.py", k="fawa"),
    M("cfa-threshold-inclusive", "CFA.fawa_step",
      "worst < self.threshold", "worst <= self.threshold",
      "flipped comparison: a worst class exactly at the threshold does not enter the average",
      T + "fidelity/test_classwise_authors.py", k="fawa"),
    M("cfa-rules-from-begin-plus-one", "CFA.after_epoch",
      "epoch >= self.begin", "epoch > self.begin",
      "off-by-one: the class-wise rules computed one epoch late", T + "methods/test_classwise.py", k="cfa_margins"),
    # ---- methods/wat.py ---------------------------------------------------------------------------
    M("wat-no-k", "wat_weights",
      "k * torch.softmax(eta * cumulative_loss, dim=0)", "torch.softmax(eta * cumulative_loss, dim=0)",
      "dropped factor K: the weights sum to 1", T + "methods/test_classwise.py", k="wat_weights"),
    M("wat-no-average-expert", "WAT.loss_weights_for",
      "self.weight[y] + self.weight[-1]", "self.weight[y]",
      "the average expert's weight w_K left out of the loss", T + "methods/test_classwise.py", k="wat_update"),
    M("wat-overall-class-mean", "WAT.validation_losses",
      '(sums["loss"].sum() / counts.sum()).view(1)', "per_class.mean().view(1)",
      "wrong reduction: the overall loss as the mean of class means", T + "methods/test_classwise.py", k="validation_sums"),
    M("wat-not-cumulative", "WAT.after_epoch",
      "self.cumulative_loss.add_(self.validation_losses(epoch))",
      "self.cumulative_loss.copy_(self.validation_losses(epoch))",
      "the losses replace C instead of adding to it", T + "fidelity/test_classwise_authors.py", k="wat"),
    # ---- methods/dafa.py --------------------------------------------------------------------------
    M("dafa-harder-flipped", "dafa_weights",
      "diag[:, None] < diag[None, :]", "diag[:, None] > diag[None, :]",
      "flipped comparison: the easier class gains", T + "methods/test_classwise.py", k="dafa_weights"),
    M("dafa-diagonal-kept", "dafa_weights",
      "terms.fill_diagonal_(0.0)", "",
      "dropped call: the i = j terms enter the weights", T + "methods/test_classwise.py", k="dafa_weights"),
    M("dafa-step-unscaled", "DAFA",
      "step_scale_for = eps_scale_for", "",
      "the attack step not scaled by W_y", T + "methods/test_classwise.py", k="training_examples"),
    M("dafa-collect-wrong-epoch", "DAFA.observe",
      "self.epoch == self.warmup_epoch", "self.current_epoch == self.warmup_epoch",
      "off-by-one: P collected in the epoch after the warm-up", T + "fidelity/test_classwise_authors.py",
      k="dafa_collects"),
    # ---- methods/faal.py --------------------------------------------------------------------------
    M("faal-margin-sign", "probability_margins",
      "other - true", "true - other",
      "flipped sign of the probability margin", T + "methods/test_classwise.py", k="probability_margins"),
    M("faal-bisection-flipped", "faal_weights",
      "kl_uniform_to(weights(mid)) > r", "kl_uniform_to(weights(mid)) < r",
      "flipped comparison in the bisection on μ", T + "methods/test_classwise.py", k="faal_weights"),
    M("faal-no-k", "FAAL.loss_weights_for",
      "scale=self.num_classes", "",
      "dropped factor K in the weighted loss", T + "methods/test_classwise.py", k="faal_loss"),
    M("faal-margin-sum", "FAAL.class_weights",
      "total / counts.clamp(min=1)", "total",
      "wrong reduction: summed instead of mean per-class margins", T + "methods/test_classwise.py", k="faal_loss"),
    # ---- methods/hot_start.py ---------------------------------------------------------------------
    M("hot-overlap-flag-inverted", "check_init_split",
      "not allow_val_overlap", "allow_val_overlap",
      "allow_val_overlap inverted", T + "fidelity/test_recipes.py", k="hot_start_that"),
    M("hot-reported-weights-ignored", "load_hot_start",
      'ckpt["batlit"].get("reported_weights", "model")', '"model"',
      "a CFA hot start fine-tunes the trained instead of the averaged (reported) weights",
      T + "methods/test_plumbing.py", k="hot_start_loads"),
    M("hot-isin-swapped", "check_init_split",
      "torch.isin(val_idx, hot_train)", "torch.isin(hot_train, val_idx)",
      "swapped arguments of isin", T + "fidelity/test_recipes.py", k="hot_start_that",
      equivalent="both index sets are duplicate-free, so the size of val ∩ train is the same either way"),
    # ---- evaluate.py ------------------------------------------------------------------------------
    M("evaluate-attack-everyone", "evaluate",
      "clean == y", "torch.ones_like(y, dtype=torch.bool)",
      "samples wrong on clean images are attacked and can count as robust",
      T + "run/test_evaluate_pieces.py", k="only_samples"),
    M("evaluate-robust-after-first", "outcome_counts",
      "adv_pred[i] == label", "adv_pred[0] == label",
      "every component's robust count added to the first component's row",
      T + "run/test_evaluate_pieces.py", k="only_samples"),
    M("evaluate-csv-worst-robust", "write_csv",
      '1 - summary["rob_worst"]', '1 - summary["rob_avg"]',
      "the CSV's worst row shows the average robust accuracy", T + "run/test_evaluate_pieces.py", k="csv"),
    M("evaluate-default-step", "build_attack",
      "eps / 4", "eps / 10",
      "wrong default: PGD-20's step ε/10 instead of ε/4", T + "run/test_evaluate_pieces.py", k="quarter_of_eps"),
    M("evaluate-steps-zero", "check_config",
      "spec.steps < 1", "spec.steps < 0",
      "off-by-one: attack.steps=0 accepted", T + "run/test_evaluate_pieces.py", k="steps_below"),
    # ---- analyze.py -------------------------------------------------------------------------------
    M("analyze-diagonal-kept", "target_distribution",
      "off.fill_diagonal_(0)", "",
      "dropped call: correctly classified samples count as adversarial targets", T + "methods/test_bat.py",
      k="target_distribution"),
    M("analyze-tv-no-half", "distance_to_uniform",
      "0.5 * (dist - 1 / k).abs().sum()", "(dist - 1 / k).abs().sum()",
      "dropped factor ½ in the total variation", T + "methods/test_bat.py", k="target_distribution"),
    M("analyze-confusion-transposed", "analyze",
      "y * K + adv", "adv * K + y",
      "swapped arguments: the adversarial confusion matrix transposed", T + "run/test_analyze_stats.py"),
    M("analyze-survival-shifted", "analyze",
      "counts.cumsum(1)[:, :S]", "counts.cumsum(1)[:, 1:]",
      "off-by-one: survival at step k counts the misclassifications of step k + 1", T + "run/test_analyze_stats.py"),
    M("analyze-tau-one", "analyze",
      "tau=0", "tau=1",
      "τ = 1 instead of 0 for the source-class statistic", T + "run/test_analyze_stats.py",
      equivalent="k*, the first misclassified evaluation, does not depend on τ; only first_adv does, which "
                 "analyze does not read"),
    # ---- report.py --------------------------------------------------------------------------------
    M("report-rho-sign", "rho",
      "(worst_acc - base_worst_acc) / base_worst_acc - (base_acc - acc) / base_acc",
      "(worst_acc - base_worst_acc) / base_worst_acc + (base_acc - acc) / base_acc",
      "flipped sign in ρ", T + "cli/test_evaluate_report.py", k="rho"),
    M("report-seed-key", "_ignored",
      'key.rsplit(".", 1)[-1]', "key",
      "data.seed splits the seeds of one configuration into groups", T + "run/test_report_numbers.py", k="data_seed"),
    M("report-per-class-first-seed", "Group.per_class",
      '[r.metrics[f"{metric}_per_class"] for r in self.runs]',
      '[r.metrics[f"{metric}_per_class"] for r in self.runs[:1]]',
      "per-class errors of the first seed instead of the mean over seeds", T + "run/test_report_numbers.py", k="per_class"),
    M("report-cost-median-min", "cost_table",
      "statistics.median(seconds)", "min(seconds)",
      "the median epoch time reported as the fastest", T + "run/test_report_numbers.py", k="cost_table"),
    # ---- reporting.py -----------------------------------------------------------------------------
    M("reporting-nan-kept", "results_to_json",
      "[None if math.isnan(v) else v for v in value.tolist()]", "value.tolist()",
      "NaN (an unseen class) written into metrics.json instead of null",
      T + "run/test_report_numbers.py", k="results_to_json"),
    M("reporting-table-fraction", "format_table.pct",
      "100 * v", "v",
      "the per-class table prints fractions under a % header", T + "run/test_report_numbers.py", k="percentages"),
    M("reporting-worst-class-index", "results_to_json",
      "class_names[int(value)]", "int(value)",
      "worst class written as an index instead of its name", T + "run/test_report_numbers.py", k="results_to_json"),
    # ---- callbacks.py -----------------------------------------------------------------------------
    M("callbacks-seed-no-rank", "epoch_seed",
      "int(seed) * 1_000_003 + int(epoch) * 7_919 + int(rank) * 104_729 + 17",
      "int(seed) * 1_000_003 + int(epoch) * 7_919 + 17",
      "dropped term: every DDP rank draws the same stream", T + "run/test_gpu_readiness.py", k="ranks_draw"),
    M("callbacks-guard-finite", "NonFiniteLossGuard.on_before_backward",
      "~torch.isfinite(loss).all()", "torch.isfinite(loss).all()",
      "flipped condition: the guard stops on a finite loss", T + "run/test_gpu_readiness.py", k="nonfinite_guard"),
    M("callbacks-guard-every", "NonFiniteLossGuard.on_before_backward",
      'self.check_every or (1 if loss.device.type == "cpu" else 50)', "self.check_every or 50",
      "wrong default: the CPU guard reads back only every 50 steps (a bad step reaches the weights)",
      T + "run/test_gpu_readiness.py", k="nonfinite_guard"),
    M("callbacks-throughput-pause", "EpochThroughput.on_train_epoch_end",
      "self._now(pl_module) - self.start - self.paused", "self._now(pl_module) - self.start + self.paused",
      "flipped sign: validation time added to the training epoch's seconds",
      T + "run/test_callbacks.py", k="throughput"),
    M("callbacks-rows-avg-count", "per_class_rows",
      'sum(summary["count_per_class"])', 'len(summary["count_per_class"])',
      "wrong reduction: the avg row counts classes instead of images", T + "run/test_callbacks.py", k="rows"),
    # ---- checkpoint.py ----------------------------------------------------------------------------
    M("ckpt-format-inclusive", "_check_record",
      'record.get("format", 1) > CHECKPOINT_FORMAT', 'record.get("format", 1) >= CHECKPOINT_FORMAT',
      "off-by-one: this batlit's own checkpoint format refused", T + "run/test_trust.py", k="real_checkpoint"),
    M("ckpt-interpolation-allowed", "_check_plain",
      '"${" in node', '"${" in node and False',
      "an interpolation in a stored config is no longer refused", T + "run/test_trust.py", k="names_code and evaluate"),
    M("ckpt-resume-check-inverted", "check_resumable",
      "old != new", "old == new",
      "flipped comparison: resume refuses matching checkpoints", T + "run/test_reliability.py", k="check_resumable"),
    M("ckpt-csv-history-strict", "keep_csv_history.kept",
      'int(float(row["epoch"])) <= done_epoch', 'int(float(row["epoch"])) < done_epoch',
      "off-by-one: resume drops the CSV rows of the checkpoint's own epoch", T + "run/test_resume.py", k="keeps_the_rows"),
    M("ckpt-download-forced", "datamodule_for",
      "bool(download)", "True",
      "a stored config makes evaluate download data", T + "run/test_trust.py", k="where_data"),
    M("ckpt-no-eval", "load_run",
      "model.eval()", "",
      "dropped call: load_run returns the model in train mode (BatchNorm on batch statistics)",
      T + "run/test_trust.py", k="real_checkpoint"),
    # ---- config.py --------------------------------------------------------------------------------
    M("config-kept-classes", "kept_classes",
      "len(set(classes))", "int(total)",
      "data.classes does not shrink the model's class count", T + "data/test_classes.py", k="model_follows"),
    M("config-momentum-one", "validate",
      "0 <= v < 1", "0 <= v <= 1",
      "off-by-one: optimizer.momentum=1 accepted", T + "run/test_validate.py", k="momentum"),
    M("config-fp16-capability", "fast_precision",
      "torch.cuda.get_device_capability() >= (7, 0)", "torch.cuda.get_device_capability() > (7, 0)",
      "flipped comparison: a V100 (7.0) trains in fp32", T + "run/test_gpu_readiness.py", k="gpu_precision"),
    M("config-bf16-override", "cpu_has_bf16",
      'forced == "1"', 'forced == "0"',
      "BATLIT_CPU_BF16 inverted", T + "run/test_fast_paths.py", k="detection"),
    M("config-warmup-inclusive", "AtMostEpochs.error",
      "value > epochs", "value >= epochs",
      "off-by-one: DAFA's warm-up in the last epoch refused", T + "run/test_validate.py", k="warmup"),
    M("config-num-classes-mismatch", "validate",
      "data_k != model_k", "data_k == model_k",
      "flipped comparison: model and data class counts", T + "run/test_validate.py", k="class_counts"),
    # ---- data/base.py -----------------------------------------------------------------------------
    M("data-quota-short", "stratified_split",
      "by_remainder[:short]", "by_remainder[:short - 1]",
      "off-by-one: the stratified split is one sample short", T + "data/test_data.py", k="stratified_split"),
    M("data-rank-inclusive", "stratified_split",
      "rank < quota[grouped_labels]", "rank <= quota[grouped_labels]",
      "off-by-one: each class gives one sample too many", T + "data/test_data.py", k="stratified_split"),
    M("data-crop-offsets", "ImageDataModule.augment",
      "oy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev)", "oy = torch.randint(0, 2 * pad, (n, 1), device=dev)",
      "off-by-one: the crop never takes the bottom-most offset", T + "data/test_data_edges.py", k="crop"),
    M("data-augment-eval", "ImageDataModule.on_after_batch_transfer",
      "self.trainer is not None and self.trainer.training and self.augment_enabled",
      "self.trainer is not None and self.augment_enabled",
      "dropped condition: validation and test batches are augmented", T + "data/test_data.py", k="only_in_training"),
    M("data-val-floor", "val_count",
      "math.ceil(amount * n)", "int(amount * n)",
      "floor instead of ceil for a fractional val_size (the training split and the hot-start check both count "
      "with val_count)", T + "data/test_data_edges.py", k="fractional"),
    M("data-sampler-same-order", "EpochRandomSampler.set_epoch",
      "1_000 + int(epoch)", "1_000",
      "every epoch sees the same order", T + "data/test_data_edges.py", k="each_epoch"),
    M("data-class-remap", "select_classes.select",
      "new >= 0", "new > 0",
      "off-by-one: the first kept class is dropped", T + "data/test_classes.py", k="remaps or by_name"),
    # ---- data/synthetic.py, digits.py, cache.py ---------------------------------------------------
    M("synthetic-seed-ignored", "SyntheticDataModule._load",
      "torch.Generator().manual_seed(self.seed)", "torch.Generator().manual_seed(0)",
      "data.seed does not change the generated samples", T + "data/test_data.py", k="deterministic_per_seed"),
    M("synthetic-unbalanced", "SyntheticDataModule._sample",
      "torch.arange(n) % self.generated_classes", "torch.arange(n) % (self.generated_classes - 1)",
      "off-by-one: the last class is never generated",
      T + "data/test_data.py", k="synthetic_shapes or deterministic_per_seed"),
    M("digits-scale", "DigitsDataModule._load",
      "255.0 / 16.0", "256.0 / 16.0",
      "wrong constant: pixel 16 wraps around to 0 in uint8", T + "data/test_data.py", k="test_digits"),
    M("cache-units", "_UNITS",
      '{"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}',
      '{"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}',
      "wrong constant: BATLIT_CACHE_MAX_BYTES=500M read as 10^6 units", T + "data/test_data_cache.py", k="cap_parsing"),
    M("cache-evict-strict", "evict",
      "total <= cap", "total < cap",
      "off-by-one: an entry is evicted when the cache is exactly at the cap", T + "data/test_data_edges.py", k="eviction"),
    # ---- models -----------------------------------------------------------------------------------
    M("normalize-multiply", "Normalize.forward",
      "(x - self.mean) / self.std", "(x - self.mean) * self.std",
      "wrong operator: multiplies by std", T + "models/test_models.py", k="normalize"),
    M("small-cnn-pool-floor", "AdaptiveAvgPool2x2._windows",
      "-((-(i + 1) * n) // out)", "((i + 1) * n) // out",
      "off-by-one: adaptive pooling windows end at floor instead of ceil", T + "run/test_gpu_readiness.py",
      k="adaptive_average"),
    M("resnet-stride-one", "ResNet.__init__",
      "self._make_layer(2 * width, num_blocks[1], stride=2)", "self._make_layer(2 * width, num_blocks[1], stride=1)",
      "wrong stride: layer2 does not downsample (same parameters, 4x the compute)",
      T + "models/test_architectures.py", k="halve"),
    M("resnet-relu-before-add", "BasicBlock.forward",
      "F.relu(out + shortcut)", "F.relu(out) + shortcut",
      "ReLU before the residual sum instead of after it", T + "models/test_architectures.py", k="relu_of"),
    M("fold-shift-sign", "_fold",
      "-bn.running_mean", "bn.running_mean",
      "flipped sign: the folded bias adds the running mean", T + "models/test_fold.py", k="same_function"),
    M("fold-bias-dropped", "conv_bn",
      "conv._conv_forward(x, *folded)", "conv._conv_forward(x, folded[0], None)",
      "dropped term: the folded convolution without its bias", T + "models/test_fold.py", k="same_function"),
    M("fold-in-training", "_foldable",
      "isinstance(bn, _BatchNorm) and (not bn.training) and (bn.running_mean is not None) and (bn.running_var is not None) and (_FOLDED not in bn.__dict__)",
      "isinstance(bn, _BatchNorm) and bn.running_mean is not None\n            and bn.running_var is not None and _FOLDED not in bn.__dict__",
      "dropped check: training-mode BatchNorm (batch statistics) folded with the running ones",
      T + "models/test_fold.py", k="training_mode"),
    M("fold-nested-refolds", "_foldable",
      "isinstance(bn, _BatchNorm) and (not bn.training) and (bn.running_mean is not None) and (bn.running_var is not None) and (_FOLDED not in bn.__dict__)",
      "isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None\n            and bn.running_var is not None",
      "dropped check: a nested call's exit unfolds the outer call's pairs", T + "models/test_fold.py", k="layout"),
    M("fold-never-restored", "folded_batchnorm",
      "bn.__dict__.pop(_FOLDED, None)", "bn.__dict__.get(_FOLDED, None)",
      "dropped call: the fold outlives the attack (stale weights after the next training step)",
      T + "models/test_fold.py", k="layout or unless"),
    M("fold-ignores-train-mode", "conv_bn",
      "folded is None or bn.training", "folded is None",
      "dropped check: a model switched to train mode inside a fold keeps the running statistics",
      T + "models/test_fold.py", k="training_mode"),
    M("fold-off-in-evaluate", "evaluate.py:evaluate",
      "folded_batchnorm(model)", "folded_batchnorm(torch.nn.Identity())",
      "dropped call: batlit.evaluate's attacks (AutoAttack included) run BatchNorm unfolded",
      T + "models/test_fold.py", k="evaluation"),
    M("fold-off-in-attacks", "eval_mode",
      "folded_batchnorm(model)", "nullcontext(model)",
      "dropped call: the attacks run BatchNorm unfolded (the fast path silently off)",
      T + "models/test_fold.py", k="unless"),
    M("wrn-shortcut-input", "WideBasicBlock.forward",
      "self.conv_shortcut(pre)", "self.conv_shortcut(x)",
      "the projection shortcut sees x instead of the pre-activated input",
      T + "models/test_architectures.py", k="wide_block"),
    M("wrn-widths", "WideResNet.__init__",
      "64 * widen_factor", "32 * widen_factor",
      "wrong constant: the last group 32k channels wide instead of 64k", T + "models/test_models.py", k="output_shape"),
    M("wrn-depth-formula", "WideResNet.__init__",
      "(depth - 4) // 6", "(depth - 2) // 6",
      "depth formula (depth - 2) // 6", T + "models/test_models.py", k="output_shape and wrn",
      equivalent="(depth - 4) % 6 == 0 is checked first, so (depth - 2) // 6 == (depth - 4) // 6 for every "
                 "accepted depth"),
    M("preact-shortcut-raw", "PreActBlock.forward",
      "self.shortcut(out)", "self.shortcut(x)",
      "the projection shortcut sees x instead of the pre-activated input",
      T + "models/test_architectures.py", k="preact_block"),
    # ---- train.py ---------------------------------------------------------------------------------
    M("train-objective-floor-flipped", "objective",
      "robust_accuracy < spec.min_robust_accuracy", "robust_accuracy > spec.min_robust_accuracy",
      "flipped comparison: the sweep objective penalises the good runs", T + "cli/test_evaluate_report.py",
      k="objective_floors"),
    M("train-on-device-flipped", "fast_paths",
      'trainer.strategy.root_device.type != "cpu"', 'trainer.strategy.root_device.type == "cpu"',
      "flipped comparison: metrics.json records on_device for CPU runs", T + "run/test_gpu_readiness.py",
      k="record_the_device"),
    M("train-resume-without-file", "resume_path",
      'cfg.get("resume") and last.is_file()', 'cfg.get("resume")',
      "resume=true without a last.ckpt resumes from a missing file", T + "run/test_resume.py",
      k="last_ckpt_only"),
    M("train-objective-split", "objective",
      'spec.split == "val"', 'spec.split != "val"',
      "flipped comparison: the sweep objective reads the other split", T + "cli/test_evaluate_report.py",
      k="objective_floors"),
    # ---- cost.py, registry.py, gallery.py ---------------------------------------------------------
    M("cost-validations-every-epoch", "cost.py:estimate",
      "(epochs // max(1, val_every)) * val_pass", "epochs * val_pass",
      "the estimate counts a validation every epoch whatever check_val_every_n_epoch says",
      T + "run/test_cost.py", k="val_every_epochs"),
    M("cost-long-run-flipped", "cost_line",
      'est["total_s"] > LONG_CPU_RUN_HOURS * 3600', 'est["total_s"] < LONG_CPU_RUN_HOURS * 3600',
      "flipped comparison: short CPU runs are told to use a GPU", T + "run/test_cost.py", k="long_cpu_run"),
    M("cost-span-minutes", "_span",
      'f"{seconds / 60:.0f} min"', 'f"{seconds / 60:.1f} min"',
      "wrong format of a minute span", T + "run/test_cost.py", k="long_cpu_run"),
    M("registry-wrn-swapped", "MODELS",
      "wrn28_10", "wrn34_10",
      "the registry builds WRN-34-10 for a WRN-28-10 checkpoint", T + "run/test_registry.py"),
    M("registry-no-logger-group", "_GROUPS",
      '("model", "data", "method", "trainer", "logger")', '("model", "data", "method", "trainer")',
      "the logger group's _target_ values are not shipped targets: every real checkpoint is refused",
      T + "run/test_trust.py", k="real_checkpoint"),
    M("gallery-eligible-swapped", "eligible",
      "(right_pred == labels) & (wrong_pred != labels)", "(right_pred != labels) & (wrong_pred == labels)",
      "swapped roles: images the baseline gets right and the model wrong", T + "run/test_gallery.py"),
    M("gallery-farthest", "nearest_training",
      "largest=False", "largest=True",
      "the farthest training images instead of the nearest", T + "run/test_gallery.py"),
    M("gallery-pick-one-short", "pick_cases",
      "picked[:n_images]", "picked[:n_images - 1]",
      "off-by-one: one case fewer than n_images", T + "run/test_gallery.py"),
    # ---- bench.py, precision_check.py -------------------------------------------------------------
    M("bench-reference-tau", "reference_trajectory",
      "tau + 1", "tau",
      "off-by-one in the reference trajectory's first_adv", T + "cli/test_bench_cli.py", k="reference_trajectory"),
    M("bench-reference-first-step", "reference_trajectory",
      "prev[i] if k > 0 else x_k[i]", "prev[i]",
      "the k = 0 special case dropped", T + "cli/test_bench_cli.py", k="reference_trajectory",
      equivalent="prev starts as a copy of x_0, so prev[i] is x_k[i] at k = 0"),
    M("bench-ratio-inverted", "bench.py:run",
      'results["bat"]["seconds_per_step"] / results["pgd_at"]["seconds_per_step"]',
      'results["pgd_at"]["seconds_per_step"] / results["bat"]["seconds_per_step"]',
      "the BAT/PGD-AT ratio inverted", T + "run/test_bench_choices.py", k="ratios"),
    M("bench-warmup-off-by-one", "time_methods",
      "i >= cfg.warmup", "i > cfg.warmup",
      "off-by-one: the first timed step is dropped with the warm-up", T + "run/test_bench_choices.py", k="warmup"),
    M("bench-auto-switches", "resolve_switches",
      '"bf16" if fast else "32"', '"32" if fast else "bf16"',
      "precision=auto picks bf16 where bf16 is slow", T + "run/test_bench_choices.py", k="auto_switches"),
    M("precision-check-keeps-wrong", "probe_model",
      "model, x[right], y[right]", "model, x, y",
      "the probe keeps images the model already gets wrong", T + "run/test_bench_choices.py", k="probe_keeps"),
    M("precision-check-fp32-attack", "modes",
      '("fp32", bf16)', '("auto", bf16)',
      "the 'fp32 attack' mode runs precision=auto", T + "run/test_bench_choices.py", k="each_precision_mode"),
]
# fmt: on


# --------------------------------------------------------------------------------------------------
# Locating a mutant's node by AST
# --------------------------------------------------------------------------------------------------

class LocateError(Exception):
    pass


@dataclass(frozen=True)
class Location:
    path: Path         # the module's file
    rel: str           # relative to src/batlit
    start: int         # character offsets of the node's source in the file's text
    end: int
    line: int          # 1-based line of the node's start
    delete: bool       # new == "": the node's whole lines go


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _scopes(tree: ast.Module) -> dict[str, list[ast.AST]]:
    """Qualified name -> nodes: every function, method and class (``Outer.inner`` for nested ones),
    every module-level assigned name, and "" for the module itself."""
    found: dict[str, list[ast.AST]] = {"": [tree]}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _DEFS):
                name = f"{prefix}{child.name}"
                found.setdefault(name, []).append(child)
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    found.setdefault(name.id, []).append(stmt)
    return found


_INDEX: dict[tuple, dict[str, tuple[str, ast.Module, dict[str, list[ast.AST]]]]] = {}


def package_index(src: Path) -> dict[str, tuple[str, ast.Module, dict[str, list[ast.AST]]]]:
    """rel path -> (text, tree, scopes) for every module of src/batlit (cached while the files are unchanged)."""
    files = sorted(p for p in (src / "batlit").rglob("*.py") if "__pycache__" not in p.parts)
    key = (str(src), tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    if key not in _INDEX:
        index = {}
        for path in files:
            text = path.read_text()
            tree = ast.parse(text)
            index[path.relative_to(src / "batlit").as_posix()] = (text, tree, _scopes(tree))
        _INDEX.clear()
        _INDEX[key] = index
    return _INDEX[key]


def _module_matches(rel: str, hint: str) -> bool:
    """``cost.py`` names src/batlit/cost.py, and also tools/cost.py after a move, or the package
    cost/ if the module became one: the hint is a trailing part of the module's path."""
    stem = hint[:-3] if hint.endswith(".py") else hint.rstrip("/")
    path = "/" + rel
    return path.endswith("/" + stem + ".py") or ("/" + stem + "/") in path


def _parse_node(text: str, delete: bool) -> list[tuple[str, list[str]]]:
    """Every reading of a node as the table writes it, each as (kind, normalised source): an
    expression, one or more statements, a keyword argument, a parameter with its default
    (``x: int = 3`` reads as a statement and as a parameter; the code decides which it is)."""
    text = textwrap.dedent(text).strip("\n")
    readings = []
    if not delete:
        try:
            readings.append(("expr", [ast.unparse(ast.parse(text, mode="eval").body)]))
        except SyntaxError:
            pass
    try:
        body = ast.parse(text).body
        if body:
            readings.append(("stmts", [ast.unparse(s) for s in body]))
    except SyntaxError:
        pass
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not call.args and len(call.keywords) == 1 and call.keywords[0].arg:
            readings.append(("keyword", [ast.unparse(call.keywords[0])]))
    except SyntaxError:
        pass
    if not delete:
        try:
            args = ast.parse(f"def f({text}): pass").body[0].args
            if len(args.args) == 1 and len(args.defaults) == 1:
                readings.append(("param", [_param(args.args[0], args.defaults[0])]))
        except SyntaxError:
            pass
    if not readings:
        raise LocateError(f"the node {text!r} is no expression, statement, keyword argument or parameter")
    return readings


def _param(arg: ast.arg, default: ast.expr) -> str:
    return f"{ast.unparse(arg)} = {ast.unparse(default)}"


def _params(fn: ast.AST):
    """(arg, default) of every parameter with a default in fn."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    yield from zip(positional[len(positional) - len(args.defaults):], args.defaults)
    yield from ((a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)


def _candidates(scope: ast.AST, kind: str, want: list[str]):
    """(first node, last node) of every match of the wanted source inside scope."""
    for node in ast.walk(scope):
        if kind == "expr" and isinstance(node, ast.expr) and ast.unparse(node) == want[0]:
            yield node, node
        elif kind == "keyword" and isinstance(node, ast.keyword) and ast.unparse(node) == want[0]:
            yield node, node
        elif kind == "param" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for arg, default in _params(node):
                if _param(arg, default) == want[0]:
                    yield arg, default
        elif kind == "stmts" and len(want) == 1:
            if isinstance(node, ast.stmt) and ast.unparse(node) == want[0]:
                yield node, node
        elif kind == "stmts":
            for field in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, field, None)
                if not isinstance(block, list):
                    continue
                n = len(want)
                for i in range(len(block) - n + 1):
                    run = block[i:i + n]
                    if all(isinstance(s, ast.stmt) for s in run) and [ast.unparse(s) for s in run] == want:
                        yield run[0], run[-1]


def _offset(lines: list[str], starts: list[int], lineno: int, col: int) -> int:
    """Character offset of (1-based line, UTF-8 byte column), as ast gives positions."""
    return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())


def locate(mutant: Mutant, src: Path) -> Location:
    """Where the mutant's node is, in the modules under src/batlit: exactly one match or LocateError."""
    index = package_index(src)
    hint, _, name = mutant.where.rpartition(":")
    scopes = [(rel, node) for rel, (_, _, found) in index.items() if not hint or _module_matches(rel, hint)
              for node in found.get(name, [])]
    if not scopes:
        raise LocateError(f"no function, class or module-level name {mutant.where!r} in src/batlit")
    modules = sorted({rel for rel, _ in scopes})
    if len(modules) > 1:
        raise LocateError(f"{name!r} is in several modules ({', '.join(modules)}): write 'module.py:{name}'")
    delete = mutant.new == ""
    matches = [(rel, first, last) for kind, want in _parse_node(mutant.node, delete) for rel, scope in scopes
               for first, last in _candidates(scope, kind, want)]
    unique = {(rel, first.lineno, first.col_offset, last.end_lineno, last.end_col_offset) for rel, first, last in matches}
    if len(unique) != 1:
        raise LocateError(f"the node {mutant.node!r} occurs {len(unique)} times in {mutant.where} "
                          f"({modules[0]}), expected exactly once")
    rel, first, last = matches[0]
    text = index[rel][0]
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    start = _offset(lines, starts, first.lineno, first.col_offset)
    end = _offset(lines, starts, last.end_lineno, last.end_col_offset)
    if delete and isinstance(first, ast.keyword):  # the argument with its comma
        after = re.match(r"\s*,\s*", text[end:])
        before = re.search(r",\s*$", text[:start])
        if after and not text[end + after.end():].startswith(")"):
            end += after.end()          # up to the next argument
        elif before:
            start = before.start()      # the last argument: from the comma before it
        else:
            raise LocateError(f"{mutant.id}: the keyword argument to delete is the call's only argument")
    elif delete:  # the statements' whole lines, if nothing else shares them
        line_start, line_end = starts[first.lineno - 1], starts[last.end_lineno]
        if text[line_start:start].strip() or text[end:line_end].strip():
            raise LocateError(f"{mutant.id}: the statement to delete shares its lines with other code")
        start, end = line_start, line_end
    return Location(src / "batlit" / rel, rel, start, end, first.lineno, delete)


def mutated_text(mutant: Mutant, src: Path) -> tuple[Location, str]:
    """The mutant's module with the node replaced; it must still parse."""
    loc = locate(mutant, src)
    text = package_index(src)[loc.rel][0]
    out = text[:loc.start] + mutant.new + text[loc.end:]
    try:
        ast.parse(out)
    except SyntaxError as err:
        raise LocateError(f"{mutant.id}: the mutated {loc.rel} does not parse: {err}") from None
    if out == text:
        raise LocateError(f"{mutant.id}: the replacement leaves {loc.rel} unchanged")
    return loc, out


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------

def make_copy(dest: Path) -> Path:
    """A checkout-shaped copy of the package: src/ (conf symlink kept), conf/, pyproject.toml."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(SRC, dest / "src", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest / "src"


def apply(mutant: Mutant, src: Path) -> Location:
    """Write the mutated module into the copy at src."""
    loc, text = mutated_text(mutant, src)
    loc.path.write_text(text)
    return loc


def suggest(mutant: Mutant, src: Path) -> str:
    """For an entry that no longer locates: where else in the package its node occurs (the innermost
    function or class of each match), as a hint for re-targeting ``where``."""
    index = package_index(src)
    try:
        readings = _parse_node(mutant.node, mutant.new == "")
    except LocateError:
        return ""
    hits: dict[tuple[str, int, int], str] = {}
    for rel, (_, _, found) in index.items():
        for qual, scopes in found.items():
            for scope in scopes if qual else []:
                for kind, want in readings:
                    for first, _ in _candidates(scope, kind, want):
                        key = (rel, first.lineno, first.col_offset)
                        if len(qual) > len(hits.get(key, "")):
                            hits[key] = qual
    if not hits:
        return "the node occurs nowhere in src/batlit"
    where = [f"{qual} ({rel}:{line})" for (rel, line, _), qual in sorted(hits.items())]
    return "the node occurs in " + ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")


def where_is(mutant: Mutant, src: Path | None = None, hint: bool = False) -> tuple[str, str]:
    """(module:line, "") where the entry locates in src (default: this checkout's), or ("", why it does
    not; with hint, also where else its node occurs)."""
    try:
        loc, _ = mutated_text(mutant, src or SRC)
    except LocateError as err:
        return "", str(err) + (f"; {suggest(mutant, src or SRC)}" if hint else "")
    return f"{loc.rel}:{loc.line}", ""


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
                mutated_text(mutant, src)
        except LocateError as err:
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
        module = args.module.rstrip("/")
        chosen = [m for m in chosen if (lambda at: at == module or at.startswith(module + "/"))(
            where_is(m)[0].rpartition(":")[0] or m.where.rpartition(":")[0])]
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
                        "instead: every one must pass (and every entry must still locate)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    chosen = select(args)

    if args.list:
        rows, stale, unselected, problems = [], 0, 0, []
        for m in chosen:
            at, why = where_is(m, hint=True)
            stale += not at
            if why:
                problems.append(f"{m.id}: {why}")
            missing = missing_tests(m)
            unselected += bool(missing)
            rows.append([m.id + ("" if at else " [does not locate]")
                         + (f" [no such test: {' '.join(missing)}]" if missing else ""), m.where, at or "-",
                         m.what + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""), " ".join(m.selection())])
        print(_table(rows, ["id", "where", "at", "mistake", "selection"]))
        for line in problems:
            print(line)
        print(f"\n{len(chosen)} mutants ({sum(1 for m in chosen if m.equivalent)} marked equivalent)"
              + (f"; {stale} that no longer locate in src/batlit (re-target their where/node)" if stale else "")
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

    if args.check_clean:  # each distinct selection once; its mutants share the outcome (located apart)
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
            at, why = where_is(m)
            results.append(Result(m, first.status if at else "error", 0.0, f"as {first.mutant.id}" if at else why))
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results += list(pool.map(one, to_run))
    total = time.perf_counter() - start
    order = {m.id: i for i, m in enumerate(MUTANTS)}
    results.sort(key=lambda r: order[r.mutant.id])

    rows = [[r.mutant.id, r.mutant.where, r.status, f"{r.seconds:.1f}", r.detail or " ".join(r.mutant.selection())]
            for r in results]
    print()
    print(_table(rows, ["id", "where", "status", "s", "caught by / detail"]))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"\n{len(results)} mutants: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f"; {total:.0f} s wall-clock with --jobs {args.jobs}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"seconds": total, "jobs": args.jobs, "check_clean": args.check_clean,
             "results": [{"id": r.mutant.id, "where": r.mutant.where, "at": where_is(r.mutant)[0], "what": r.mutant.what, "status": r.status,
                          "seconds": round(r.seconds, 1), "detail": r.detail,
                          "selection": r.mutant.selection()} for r in results]}, indent=2))
    bad = {"survived", "error", "timeout", "FAILS"}
    return 1 if any(r.status in bad for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
