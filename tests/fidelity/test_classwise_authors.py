"""Fidelity of the class-wise methods (CFA, WAT, DAFA, FAAL) to their authors' code, measured.

The authors' functions are written again below from the facts of their repositories, in plain
torch that follows the input's device (no ``.cuda()``; the input normalisation, DataParallel and
the hard-coded 10 classes left out):

- PKU-ML/CFA (071f333): attack.py ``cw_attack_pgd``, ``cw_pgd_loss``, ``cw_trades_loss``; train.py's
  per-epoch rules (CCM's ε_k, CCR's b_k, ``CW_log``, FAWA's gate); utils.py ``weight_average``;
- boqili/WAT (62d1184): attack_generator.py ``trades``; worst_class_adversarial_train.py
  ``TRADES_loss``, ``TRADES_classwise_loss``, ``train``, ``validate`` and the main loop's update;
- rucy74/DAFA (c60ba83): losses.py ``trades_loss``, ``madry_loss``; utils.py
  ``calculate_class_weights`` (as corrected in 74657cd, and the rule before it);
- TrustAI/FAAL (b20ee9d): utils.py ``pgd_attack``, ``cw``; ft_prn.py's batch; FAAL.py
  ``DAW.solve_weight``, whose cvxpy problem is handed to scipy's SLSQP (cvxpy is not installed).

Each test runs batlit's own code path (``perturb``, ``objective``, ``after_epoch``) and the port on
the same inputs, weights and random start (the same torch seed before each; where batlit seeds a
validation batch's generator, the port draws from that generator too) and compares examples,
losses, gradients, BatchNorm statistics and the class-wise state.

Where batlit differs from the authors on purpose, a test shows the difference concretely:

- CFA's AT attack runs with BatchNorm in train mode (batlit: eval mode, as every attack);
- CFA makes an extra clean train-mode forward after each optimizer step (batlit does not);
- CFA's ``weight_average`` averages BatchNorm's integer batch counter too (batlit copies it);
- WAT divides its validation sums by 3072 for 3000 images (batlit: by the true count);
- DAFA's PGD-AT attack has a leftover unscaled step and a Gaussian start (batlit: pgd_at's attack);
- FAAL's AT step makes an unused clean train-mode forward (batlit does not).

Two differences this file found were then removed from batlit: the KL attacks' start (the
authors' x + 0.001·N is not clamped into [0, 1]; batlit's was) and FAAL's TRADES forwards (the
authors' two, adversarial then clean; batlit's were three).
"""

from __future__ import annotations

import copy
import math
import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from scipy.optimize import minimize
from torch import nn

from batlit.methods import CFA, DAFA, FAAL, WAT, cfa_betas, cfa_margins, dafa_weights, faal_weights, wat_weights
from batlit.methods.classwise import validation_seed
from batlit.methods.faal import kl_uniform_to, probability_margins

EPS, ALPHA, STEPS = 8 / 255, 5 / 255, 3  # STEPS·ALPHA > 1.5·EPS: every class-wise ε-box is reached
VAL_STEP, VAL_STEPS = 4 / 255, 2  # attack.val: CFA's FAWA check; attack.test is weaker, so a mix-up shows
ATTACK = {"eps": EPS, "train": {"steps": STEPS, "step_size": ALPHA},
          "val": {"steps": VAL_STEPS, "step_size": VAL_STEP}, "test": {"steps": 1, "step_size": 1 / 255}}
OPT = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
K = 4


# ---- tiny models, inputs and harness -------------------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread. With two, OpenMP's hand-offs make each conv on a busy
    2-core machine ~100x slower than the work itself; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bn_model(k: int = K, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, k))
    model.num_classes = k
    return model


def _plain_model(k: int = K, seed: int = 0) -> nn.Module:
    """No BatchNorm, no dropout: train and eval mode compute the same function."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, k))
    model.num_classes = k
    return model


def _batch(seed: int = 1, n: int = 16, k: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0.1, 0.9] (the authors' unclamped x + 0.001·N start stays in [0, 1]: see
    test_the_kl_attack_start_is_clamped_into_the_image_unlike_the_authors) and balanced labels."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 + 0.8 * torch.rand(n, 3, 4, 4, generator=g)
    y = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    return x, y


def _separable_batch(seed: int, n: int, k: int = K, signal: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced images a tiny model learns in a few steps: class c brightens quadrant c by ``signal``."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    x = 0.3 + 0.4 * torch.rand(n, 3, 4, 4, generator=g)
    for i, c in enumerate(y.tolist()):
        row, col = divmod(c % 4, 2)
        x[i, :, 2 * row:2 * row + 2, 2 * col:2 * col + 2] += signal
    return x, y


def _at_epoch(monkeypatch, method, epoch: int) -> None:
    """The trainer at this 0-based epoch (Lightning's ``current_epoch``; 1-based epoch + 1)."""
    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: epoch))


def _with_val_split(monkeypatch, loader) -> None:
    """A trainer whose datamodule's validation loader is ``loader`` (one process)."""
    monkeypatch.setattr(LightningModule, "trainer", property(lambda self: SimpleNamespace(
        datamodule=SimpleNamespace(val_dataloader=lambda: loader), world_size=1)))


def _assert_same_state(ours: nn.Module, reference: nn.Module, **tol) -> None:
    """Every weight and buffer (BatchNorm's running statistics and batch counter included)."""
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}", **tol)


def _assert_same_grads(ours: nn.Module, reference: nn.Module, **tol) -> None:
    for (name, a), (_, b) in zip(ours.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=lambda m, name=name: f"grad of {name}: {m}", **tol)


def _bn(model: nn.Module) -> nn.BatchNorm2d:
    return model[1]


@contextmanager
def _quiet():
    """``self.log`` without a Trainer warns; the values logged are not what these tests measure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _objective_backward(method, x, y, x_adv) -> dict[str, torch.Tensor]:
    method.train()
    out = method.objective(x, y, x_adv)
    out["loss"].backward()
    return out


# ==== CFA (PKU-ML/CFA) ===============================================================================

def cfa_cw_attack_pgd(model, x, y, eps, alpha, n_iters):
    """attack.py ``cw_attack_pgd``: ε per sample broadcast to x's shape; δ = (U[0,1) − 0.5)·2·ε
    clipped to [−x, 1 − x]; n_iters sign steps on CE (mean), each clipped to [−ε, ε] then to
    [−x, 1 − x]. The model stays in the mode its caller left it: train (``train_epoch``)."""
    eps = eps.view(-1, 1, 1, 1).expand_as(x)
    delta = (torch.rand_like(x) - 0.5) * 2 * eps
    delta = torch.clamp(delta, 0 - x, 1 - x)
    delta.requires_grad_(True)
    for _ in range(n_iters):
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)  # the authors' loss.backward(); delta.grad
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-eps, max=eps)
        d = torch.clamp(d, 0 - x, 1 - x)
        delta = d.detach().requires_grad_(True)
    return delta.detach()


def cfa_cw_pgd_loss(model, x, y, cw_eps, alpha, n_iters):
    """attack.py ``cw_pgd_loss``: ε_{y_i}, then CE(f(x + δ), y) in the caller's (train) mode.
    Returns (loss, robust output, x + δ)."""
    delta = cfa_cw_attack_pgd(model, x, y, cw_eps[y], alpha, n_iters)
    robust_output = model(x + delta)
    return F.cross_entropy(robust_output, y), robust_output.detach(), x + delta


def cfa_cw_trades_loss(model, x_natural, y, cw_eps, cw_beta, step_size, perturb_steps):
    """attack.py ``cw_trades_loss`` (cw_beta holds b_k = β_k/(1 + β_k)): the KL attack in eval mode
    from x + 0.001·N inside the box ε_{y_i}; then three train-mode forwards f(x), f(x'), f(x) and
    Σ_i [(1 − b_i)·CE_i + b_i·KL_i] / B. Returns (loss, robust output, x')."""
    batch_beta = cw_beta[y]
    batch_eps = cw_eps[y].view(-1, 1, 1, 1).expand_as(x_natural)
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - batch_eps), x_natural + batch_eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y, reduction="none") / batch_size
    robust_out = model(x_adv)
    loss_robust = (1.0 / batch_size) * nn.KLDivLoss(reduction="none")(F.log_softmax(robust_out, dim=1),
                                                                       F.softmax(model(x_natural), dim=1))
    loss_robust = loss_robust.sum(1)
    loss = ((1 - batch_beta) * loss_natural + batch_beta * loss_robust).sum()
    return loss, robust_out.detach(), x_adv


def cfa_epoch_rules(epoch, cw_history, begin, eps, beta, lambda_1, lambda_2, ccr, k, device="cpu"):
    """train.py's main loop at 0-based ``epoch``: (class_eps, class_beta) from cw_tensor[-1, 1, :],
    the class-wise training robust accuracy of the previous epoch."""
    if epoch >= begin:
        train_robust = cw_history[-1].to(device)
        class_eps = (torch.ones(k, device=device) * lambda_1 + train_robust) * eps
    else:
        class_eps = torch.ones(k, device=device) * eps
    if ccr and epoch >= begin:
        class_beta = (lambda_2 + train_robust) * beta / (1 + (lambda_2 + train_robust) * beta)
    else:
        class_beta = torch.ones(k, device=device) * (beta / (1 + beta))
    return class_eps, class_beta


class CfaCwLog:
    """train.py ``CW_log.update_robust`` / ``result``: m·cw_robust_k / N over an epoch."""

    def __init__(self, k):
        self.k, self.n, self.cw_robust = k, 0, None

    def update_robust(self, output, y):
        if self.cw_robust is None:
            self.cw_robust = torch.zeros(self.k, device=output.device)
        self.n += len(y)
        correct = output.max(1)[1] == y
        for i, c in enumerate(y):
            if correct[i]:
                self.cw_robust[c] += 1

    def result(self):
        return self.k * self.cw_robust / self.n


def cfa_weight_average(model, new_model, decay_rate, init=False):
    """utils.py ``weight_average``: model ← decay·model + (1 − decay)·new_model over the whole state
    dict (an integer buffer averaged as a float, then copied back into the integer buffer)."""
    model.eval()
    new_model.eval()
    state_dict = model.state_dict()
    new_dict = new_model.state_dict()
    if init:
        decay_rate = 0
    for key in state_dict:
        new_dict[key] = (state_dict[key] * decay_rate + new_dict[key] * (1 - decay_rate)).clone().detach()
    model.load_state_dict(new_dict)


def cfa_valid_robust(model, loader, eps, alpha, n_iters, epoch, k):
    """train.py: ``eval_epoch(model, valid_loader, ..., pgd_loss, ...)[3]``, whose min is FAWA's R_min:
    eval mode, ``attack_pgd`` (δ ~ U(−ε, ε) clipped to [−x, 1 − x], CE sign steps), the class-wise
    robust accuracy m·correct_k/N. The start of batch i is drawn from batlit's generator for it."""
    model.eval()
    log = CfaCwLog(k)
    for i, (x, y) in enumerate(loader):
        g = torch.Generator(device=x.device).manual_seed(validation_seed(epoch, i))
        delta = torch.zeros_like(x).uniform_(-eps, eps, generator=g)
        delta = torch.clamp(delta, 0 - x, 1 - x).requires_grad_(True)
        for _ in range(n_iters):
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
            d = torch.clamp(delta + alpha * torch.sign(grad), min=-eps, max=eps)
            delta = torch.clamp(d, 0 - x, 1 - x).detach().requires_grad_(True)
        with torch.no_grad():
            log.update_robust(model(x + delta), y)
    return log.result()


@pytest.mark.parametrize("ccr", [False, True])
def test_cfa_trades_step_is_cw_trades_loss(monkeypatch, ccr):
    """Past ``begin``, with CCM (and CCR): the class-wise KL attack, the per-sample
    (CE + β_y·KL)/(1 + β_y) loss (also without CCR: b = 6/7), its gradients, the three forwards'
    BatchNorm statistics, and t's source (the train-mode adversarial forward of the loss)."""
    x, y = _batch()
    method = CFA(_bn_model(), attack=ATTACK, optimizer=OPT, base="trades", ccr=ccr, fawa=False)
    t = torch.tensor([0.1, 0.6, 0.35, 0.9])  # last epoch's class-wise training robust accuracy
    method.eps_scale.copy_(cfa_margins(t, 0.5))
    if ccr:
        method.class_beta.copy_(cfa_betas(t, 6.0, 0.5))
    _at_epoch(monkeypatch, method, 10)  # 0-based 10 >= begin: the authors' rules act
    class_eps, class_b = cfa_epoch_rules(10, [t], 10, EPS, 6.0, 0.5, 0.5, ccr, K)
    reference = copy.deepcopy(method.model)

    torch.manual_seed(5)
    x_adv = method.perturb(x, y)
    torch.manual_seed(5)
    ref_loss, ref_output, ref_x_adv = cfa_cw_trades_loss(reference, x, y, class_eps, class_b, ALPHA, STEPS)
    torch.testing.assert_close(x_adv, ref_x_adv)
    reached = (x_adv - x).abs().flatten(1).amax(1)
    torch.testing.assert_close(reached, class_eps[y])  # the class-wise box is reached and kept

    out = _objective_backward(method, x, y, x_adv)
    ref_loss.backward()
    torch.testing.assert_close(out["loss"], ref_loss)
    _assert_same_grads(method.model, reference)
    _assert_same_state(method.model, reference)
    assert int(_bn(method.model).num_batches_tracked) == 3  # f(x), f(x'), f(x); the attack in eval mode
    correct = torch.zeros(K).index_add_(0, y, (ref_output.argmax(1) == y).float())
    torch.testing.assert_close(method.epoch_correct, correct)


def test_cfa_ccm_and_ccr_follow_the_previous_epochs_training_accuracy(monkeypatch):
    """Three epochs with begin = 2 through after_epoch: the examples of every batch equal the
    authors' with train.py's class_eps and class_beta of that epoch, which come from CW_log of the
    previous epoch (the train-mode adversarial outputs), from 0-based epoch ``begin`` on."""
    batches = [_batch(seed=s) for s in (1, 2)]
    method = CFA(_plain_model(), attack=ATTACK, optimizer=OPT, base="trades", ccr=True, fawa=False, begin=2)
    reference = copy.deepcopy(method.model)
    opt = torch.optim.SGD(method.model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    history = []
    for epoch in range(3):  # 0-based, as train.py
        _at_epoch(monkeypatch, method, epoch)
        class_eps, class_b = cfa_epoch_rules(epoch, history, 2, EPS, 6.0, 0.5, 0.5, True, K)
        torch.testing.assert_close(EPS * method.eps_scale, class_eps)
        b = method.class_beta / (1 + method.class_beta)
        torch.testing.assert_close(b, class_b)
        log = CfaCwLog(K)
        for seed, (x, y) in enumerate(batches):
            torch.manual_seed(seed)
            x_adv = method.perturb(x, y)
            torch.manual_seed(seed)
            ref_loss, ref_output, ref_x_adv = cfa_cw_trades_loss(reference, x, y, class_eps, class_b, ALPHA, STEPS)
            torch.testing.assert_close(x_adv, ref_x_adv)
            opt.zero_grad()
            out = _objective_backward(method, x, y, x_adv)
            opt.step()
            ref_opt.zero_grad()
            ref_loss.backward()
            ref_opt.step()
            torch.testing.assert_close(out["loss"], ref_loss)
            log.update_robust(ref_output, y)
        history.append(log.result())
        method.after_epoch(epoch + 1)
        torch.testing.assert_close(method.train_accuracy, history[-1])
    # the rules did act: epoch 2's accuracy is not the same for every class
    assert method.eps_scale.unique().numel() > 1 and method.class_beta.unique().numel() > 1


def test_cfa_pgd_at_attack_differs_from_cw_pgd_loss_only_by_the_batchnorm_mode(monkeypatch):
    """Deliberate: the authors' AT attack runs in train mode (train_epoch never calls eval), batlit's
    in eval mode. Without BatchNorm the examples and loss are the authors'; with it, the authors'
    function run in eval mode gives batlit's examples, while in train mode it gives others and moves
    the running statistics once per attack step."""
    x, y = _batch()
    t = torch.tensor([0.1, 0.6, 0.35, 0.9])
    cw_eps = (0.5 + t) * EPS
    for make in (_plain_model, _bn_model):
        method = CFA(make(), attack=ATTACK, optimizer=OPT, base="pgd_at", fawa=False)
        method.eps_scale.copy_(cfa_margins(t, 0.5))
        _at_epoch(monkeypatch, method, 10)
        torch.manual_seed(3)
        x_adv = method.perturb(x, y)
        reached = (x_adv - x).abs().flatten(1).amax(1)
        torch.testing.assert_close(reached, cw_eps[y])
        reference = copy.deepcopy(method.model).train()
        torch.manual_seed(3)
        ref_loss, ref_output, ref_x_adv = cfa_cw_pgd_loss(reference, x, y, cw_eps, ALPHA, STEPS)
        if make is _plain_model:
            torch.testing.assert_close(x_adv, ref_x_adv)
            out = _objective_backward(method, x, y, x_adv)
            ref_loss.backward()
            torch.testing.assert_close(out["loss"], ref_loss)
            _assert_same_grads(method.model, reference)
            correct = torch.zeros(K).index_add_(0, y, (ref_output.argmax(1) == y).float())
            torch.testing.assert_close(method.epoch_correct, correct)
        else:
            assert not torch.allclose(x_adv, ref_x_adv)  # train-mode BatchNorm: other examples
            assert int(_bn(reference).num_batches_tracked) == STEPS + 1  # each attack step + the loss's
            eval_reference = copy.deepcopy(method.model).eval()
            torch.manual_seed(3)
            eval_x_adv = x + cfa_cw_attack_pgd(eval_reference, x, y, cw_eps[y], ALPHA, STEPS)
            torch.testing.assert_close(x_adv, eval_x_adv)
            out = _objective_backward(method, x, y, x_adv)
            assert int(_bn(method.model).num_batches_tracked) == 1


def test_cfa_makes_no_clean_forward_after_the_step_unlike_train_epoch():
    """Deliberate: train_epoch runs model(x) in train mode after opt.step() (for its clean-accuracy
    log), which moves BatchNorm's running statistics once more towards the clean batch; batlit does
    not. Everything else after a step is the authors'."""
    x, y = _batch()
    method = CFA(_bn_model(), attack=ATTACK, optimizer=OPT, base="trades", fawa=False)
    reference = copy.deepcopy(method.model)
    opt = torch.optim.SGD(method.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    class_eps, class_b = cfa_epoch_rules(0, [], 10, EPS, 6.0, 0.5, 0.5, False, K)
    torch.manual_seed(0)
    x_adv = method.perturb(x, y)
    _objective_backward(method, x, y, x_adv)
    opt.step()
    torch.manual_seed(0)
    ref_loss, _, _ = cfa_cw_trades_loss(reference, x, y, class_eps, class_b, ALPHA, STEPS)
    ref_opt.zero_grad()
    ref_loss.backward()
    ref_opt.step()
    _assert_same_state(method.model, reference)  # up to here: the authors'
    with torch.no_grad():
        reference(x)  # train_epoch: clean_output = model(x), in train mode
    bn = _bn(method.model)
    with torch.no_grad():
        batch_mean = method.model[0](x).mean(dim=(0, 2, 3))
    torch.testing.assert_close(_bn(reference).running_mean, 0.9 * bn.running_mean + 0.1 * batch_mean)
    assert int(_bn(reference).num_batches_tracked) == int(bn.num_batches_tracked) + 1


def test_fawa_is_weight_average_gated_by_the_worst_class(monkeypatch):
    """FAWA over three epochs: the class-wise validation robust accuracy (attack.val's eval-mode PGD)
    and its minimum R_min are the authors'; the first qualifying epoch copies the model, the next
    averages 0.88·avg + 0.12·θ (BatchNorm's running statistics included), an epoch under the
    threshold leaves the average alone.

    Deliberate: ``weight_average`` also averages BatchNorm's integer ``num_batches_tracked`` as a
    float and truncates it when loading it back (0.88·10 + 0.12·20 = 11.2 → 11); batlit copies the
    model's counter (20). BatchNorm reads the counter only in train mode with momentum=None (a
    cumulative average); the averaged model is only evaluated, so both compute the same outputs.
    """
    val = [_separable_batch(7, 16), _separable_batch(8, 16)]
    _with_val_split(monkeypatch, val)
    method = CFA(_bn_model(), attack=ATTACK, optimizer=OPT, base="pgd_at", fawa=True, threshold=0.0)
    reference = copy.deepcopy(method.model)
    fawa_reference = _bn_model(seed=123)  # the authors' FAWA_model: a network of its own initialisation
    seat_init = False
    opt = torch.optim.SGD(method.model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    train_x, train_y = _separable_batch(9, 32)
    measured = {}
    validation_sums = method.validation_sums

    def spy(*args, **kwargs):
        measured["sums"], measured["counts"] = validation_sums(*args, **kwargs)
        return measured["sums"], measured["counts"]

    method.validation_sums = spy
    for epoch in (1, 2, 3):  # 1-based
        for model, optimizer in ((method.model, opt), (reference, ref_opt)):  # the same training
            model.train()
            for _ in range(10):
                optimizer.zero_grad()
                F.cross_entropy(model(train_x), train_y).backward()
                optimizer.step()
        robust = cfa_valid_robust(reference, val, EPS, VAL_STEP, VAL_STEPS, epoch, K)
        r_min = float(robust.min())
        if epoch == 3:
            method.threshold = r_min + 0.01  # this epoch does not qualify
        if r_min >= method.threshold:
            cfa_weight_average(fawa_reference, reference, 0.88, init=not seat_init)
            seat_init = True
        else:
            cfa_weight_average(fawa_reference, reference, 1.0, False)
        with _quiet():
            method.after_epoch(epoch)
        torch.testing.assert_close(measured["sums"]["correct"] / measured["counts"], robust)
        assert method._fawa_worst == pytest.approx(r_min)
        assert method.reported_weights == "averaged_model"
        for name, ours in method.averaged_model.state_dict().items():
            authors = fawa_reference.state_dict()[name]
            if name.endswith("num_batches_tracked"):  # the model's counter: 10 forwards per epoch
                assert int(ours) == {1: 10, 2: 20, 3: 20}[epoch]             # batlit: the model's value
                assert int(authors) == {1: 10, 2: math.trunc(0.88 * 10 + 0.12 * 20), 3: 11}[epoch]
            else:
                torch.testing.assert_close(ours, authors, msg=lambda m, name=name: f"epoch {epoch}, {name}: {m}")
    assert 0 < r_min < 1  # the statistic is informative here
    x, _ = _batch()
    method.averaged_model.eval()
    fawa_reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.averaged_model(x), fawa_reference(x))


def test_fawa_before_its_first_epoch_reports_the_trained_model(monkeypatch):
    """Before the first qualifying epoch the authors evaluate FAWA_model, a randomly initialised
    network; batlit reports the trained model until FAWA has taken one."""
    val = [_batch(seed=7, n=8)]
    _with_val_split(monkeypatch, val)
    method = CFA(_bn_model(), attack=ATTACK, optimizer=OPT, base="pgd_at", fawa=True, threshold=1.0)
    with _quiet():
        method.after_epoch(1)
    assert method._fawa_worst < 1.0
    assert method.reported_weights == "model" and not bool(method.fawa_started)


# ==== WAT (boqili/WAT) ================================================================================

def wat_trades_attack(model, data, epsilon, step_size, num_steps, generator=None, clamp_start=False):
    """attack_generator.py ``trades`` (category and loss 'trades', rand_init True): eval mode,
    x + 0.001·N, sign steps on KL(sum)(softmax f(x) ‖ f(x')) with f(x) recomputed each step, the
    ε-box, [0, 1]. ``clamp_start``: not the authors' (batlit's start, clamped into [0, 1])."""
    model.eval()
    x_adv = data.detach().clone() + 0.001 * torch.randn(data.shape, generator=generator, device=data.device)
    if clamp_start:
        x_adv = x_adv.clamp(0.0, 1.0)
    for _ in range(num_steps):
        x_adv.requires_grad_()
        output = model(x_adv)
        with torch.enable_grad():
            loss_adv = nn.KLDivLoss(reduction="sum")(F.log_softmax(output, dim=1),
                                                     F.softmax(model(data.detach().clone()), dim=1))
        (grad,) = torch.autograd.grad(loss_adv, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, data - epsilon), data + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv.detach()


def wat_trades_loss(adv_logits, natural_logits, target, beta):
    """``TRADES_loss``: mean CE + β·KL(sum)/B."""
    batch_size = len(target)
    loss_natural = nn.CrossEntropyLoss(reduction="mean")(natural_logits, target)
    loss_robust = (1.0 / batch_size) * nn.KLDivLoss(reduction="sum")(F.log_softmax(adv_logits, dim=1),
                                                                      F.softmax(natural_logits, dim=1))
    return loss_natural + beta * loss_robust


def wat_trades_classwise_loss(adv_logits, natural_logits, target):
    """``TRADES_classwise_loss``: per-sample CE_i and KL_i (summed over classes)."""
    loss_natural = nn.CrossEntropyLoss(reduction="none")(natural_logits, target)
    loss_robust = nn.KLDivLoss(reduction="none")(F.log_softmax(adv_logits, dim=1), F.softmax(natural_logits, dim=1))
    return loss_natural, loss_robust.sum(dim=1)


def wat_train_loss(model, data, output_adv, target, class_weights, beta, class_num):
    """``train``'s loss with --alg wat: two train-mode forwards (clean, adversarial), the class
    sums weighted by w_k over B, plus TRADES_loss·w_K."""
    model.train()
    natural_logits = model(data)
    adv_logits = model(output_adv)
    iter_nat_loss, iter_bndy_loss = wat_trades_classwise_loss(adv_logits, natural_logits, target)
    nat_loss = bndy_loss = 0
    for i in range(class_num):
        nat_loss = nat_loss + iter_nat_loss[target == i].sum() * class_weights[i]
        bndy_loss = bndy_loss + iter_bndy_loss[target == i].sum() * class_weights[i]
    loss = (nat_loss + beta * bndy_loss) / data.shape[0]
    return loss + wat_trades_loss(adv_logits, natural_logits, target, beta) * class_weights[class_num]


def wat_validate(model, loader, epsilon, step_size, num_steps, beta, class_num, epoch, normaliser):
    """``validate`` and the main loop's cost: per class Σ_{i∈k} CE_i·K/normaliser, entry K
    Σ_i CE_i/K·K/normaliser, the same for KL; cost = nat + β·bndy. The authors' normaliser is
    val_iter·batch_size (24·128 = 3072 for 3000 images). Batch i starts from batlit's generator."""
    model.eval()
    nat = bndy = None
    for i, (data, target) in enumerate(loader):
        if nat is None:
            nat = torch.zeros(class_num + 1, device=data.device)
            bndy = torch.zeros(class_num + 1, device=data.device)
        g = torch.Generator(device=data.device).manual_seed(validation_seed(epoch, i))
        output_adv = wat_trades_attack(model, data, epsilon, step_size, num_steps, generator=g)
        with torch.no_grad():
            iter_nat, iter_bndy = wat_trades_classwise_loss(model(output_adv), model(data), target)
            for c in range(class_num):
                nat[c] += iter_nat[target == c].sum()
                bndy[c] += iter_bndy[target == c].sum()
            nat[class_num] += iter_nat.sum() / class_num
            bndy[class_num] += iter_bndy.sum() / class_num
    return nat / normaliser * class_num + beta * (bndy / normaliser * class_num)


def wat_class_weights(cost_rows, eta, class_num):
    """The main loop: class_factor = exp(η·Σ_epochs cost); w = K·class_factor / Σ class_factor."""
    class_factor = (torch.stack(cost_rows).sum(0) * eta).exp()
    return class_num * class_factor / class_factor.sum()


def test_wat_validation_statistic_and_weights_are_the_authors(monkeypatch):
    """Two epochs through after_epoch on a balanced validation split: L (per-class mean TRADES loss
    of validation adversarial examples, entry K the overall mean), C ← C + L, w = K·softmax(η·C) over
    K + 1 entries. Deliberate: the authors divide by 3072 for 3000 images, which scales L (hence η)
    by 3000/3072; batlit divides by the true count."""
    val = [_batch(seed=7, n=8), _batch(seed=8, n=8)]  # 2 images per class and batch
    n_val = 16
    _with_val_split(monkeypatch, val)
    method = WAT(_bn_model(), attack=ATTACK, optimizer=OPT, eta=0.1, beta=6.0)
    torch.testing.assert_close(method.weight, torch.ones(K + 1))  # the authors' start: ones(K + 1)
    reference = copy.deepcopy(method.model)
    costs = []
    for epoch in (1, 2):
        before = method.cumulative_loss.clone()
        method.after_epoch(epoch)
        costs.append(wat_validate(reference, val, EPS, ALPHA, STEPS, 6.0, K, epoch, normaliser=n_val))
        torch.testing.assert_close(method.cumulative_loss - before, costs[-1])
        torch.testing.assert_close(method.weight, wat_class_weights(costs, 0.1, K))
        assert float(method.weight.sum()) == pytest.approx(K)
        if epoch == 1:
            with torch.no_grad():  # another model for the next epoch
                for model in (method.model, reference):
                    model[0].weight.mul_(1.5)
    by_3072 = wat_validate(reference, val, EPS, ALPHA, STEPS, 6.0, K, 2, normaliser=n_val * 3072 / 3000)
    torch.testing.assert_close(by_3072, costs[-1] * 3000 / 3072)
    assert not torch.allclose(by_3072, costs[-1])
    _assert_same_state(method.model, reference)  # the statistic ran in eval mode


def test_wat_step_is_the_authors():
    """The TRADES attack and (1/B)Σ(w_y + w_K)(CE + β·KL) from the authors' two forwards (clean,
    then adversarial): loss, gradients and BatchNorm statistics."""
    x, y = _batch()
    method = WAT(_bn_model(), attack=ATTACK, optimizer=OPT, eta=0.1, beta=6.0)
    weights = wat_weights(torch.tensor([3.0, 9.0, 5.0, 12.0, 7.0]), 0.1)
    method.weight.copy_(weights)
    reference = copy.deepcopy(method.model)
    torch.manual_seed(4)
    x_adv = method.perturb(x, y)
    torch.manual_seed(4)
    ref_x_adv = wat_trades_attack(reference, x, EPS, ALPHA, STEPS)
    torch.testing.assert_close(x_adv, ref_x_adv)
    out = _objective_backward(method, x, y, x_adv)
    ref_loss = wat_train_loss(reference, x, ref_x_adv, y, weights, 6.0, K)
    ref_loss.backward()
    torch.testing.assert_close(out["loss"], ref_loss)
    _assert_same_grads(method.model, reference)
    _assert_same_state(method.model, reference)
    assert int(_bn(method.model).num_batches_tracked) == 2


# ==== DAFA (rucy74/DAFA) ==============================================================================

def dafa_class_similarity(probs, labels):
    """``calculate_class_weights``' class_similarity: row i the mean stored softmax of class i."""
    num_classes = len(np.unique(labels))
    class_similarity = np.zeros((num_classes, num_classes))
    for i in range(num_classes):
        class_similarity[i] = np.mean(probs[np.where(labels == i)[0]], axis=0)
    return class_similarity


def dafa_weights_from_similarity(class_similarity, lamb=1.0, fixed=True):
    """utils.py ``calculate_class_weights``' loop: the rule of 74657cd (``fixed``) or the one before."""
    num_classes = len(class_similarity)
    class_weights = np.ones(num_classes)
    for i in range(num_classes):
        for j in range(num_classes):
            if i == j:
                continue
            if class_similarity[i, i] < class_similarity[j, j]:
                class_weights[i] += lamb * class_similarity[i, j] * class_similarity[j, j]
            elif fixed:
                class_weights[i] -= lamb * class_similarity[j, i] * class_similarity[i, i]
            else:
                class_weights[i] -= lamb * class_similarity[i, j] * class_similarity[j, j]
    return class_weights


def dafa_calculate_class_weights(memory_dict, lamb=1.0, fixed=True):
    """utils.py ``calculate_class_weights`` (numpy, float64)."""
    probs, labels = memory_dict["probs"], memory_dict["labels"]
    return dafa_weights_from_similarity(dafa_class_similarity(probs, labels), lamb, fixed)


def dafa_trades_loss(model, x_natural, y, class_weights, epsilon, step_size, perturb_steps, beta, memory=None):
    """losses.py ``trades_loss``: eval mode; f(x) once; x + 0.001·N; steps W_y·α, box W_y·ε, [0, 1];
    then train mode, f(x') before f(x); mean W_y·CE(f(x)) + β·KL(sum)/B; the train-mode softmax of
    f(x') into ``memory`` (the warm-up's last epoch). Returns (loss, x')."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    class_weights_mask = class_weights.to(x_natural.device, torch.float32)[y]
    x_adv = x_natural.detach() + 0.0
    x_adv += 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    logits_nat = model(x_natural)
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            logits = model(x_adv)
            loss_kl = criterion_kl(F.log_softmax(logits, dim=1), F.softmax(logits_nat, dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + (class_weights_mask * step_size).view(-1, 1, 1, 1) * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - (class_weights_mask * epsilon).view(-1, 1, 1, 1)),
                          x_natural + (class_weights_mask * epsilon).view(-1, 1, 1, 1))
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    x_adv = x_adv.detach()
    model.train()
    logits = model(x_adv)
    logits_nat = model(x_natural)
    loss_natural = (nn.CrossEntropyLoss(reduction="none")(logits_nat, y) * class_weights_mask).mean()
    loss_robust = criterion_kl(F.log_softmax(logits, dim=1), F.softmax(logits_nat, dim=1)) / batch_size
    if memory is not None:
        memory["probs"].append(F.softmax(logits, dim=1).detach().cpu().numpy())
        memory["labels"].append(y.detach().cpu().numpy())
    return loss_natural + beta * loss_robust, x_adv


def dafa_madry_attack(model, x_natural, y, class_weights, epsilon, step_size, perturb_steps):
    """losses.py ``madry_loss``'s attack: eval mode, x + 0.001·N, CE (mean) sign steps: the
    class-wise step and box, then the leftover unscaled step and the plain ε-box, then [0, 1]."""
    model.eval()
    mask = class_weights.to(x_natural.device, torch.float32)[y].view(-1, 1, 1, 1)
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_ce = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(loss_ce, [x_adv])[0]
        x_adv = x_adv.detach() + mask * step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - mask * epsilon), x_natural + mask * epsilon)
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv.detach()


def dafa_madry_loss(model, x_adv, y, class_weights):
    """``madry_loss`` after the attack: one train-mode forward, mean W_y·CE(f(x'), y)."""
    model.train()
    mask = class_weights.to(x_adv.device, torch.float32)[y]
    return (nn.CrossEntropyLoss(reduction="none")(model(x_adv), y) * mask).mean()


def _random_similarity(rng, k):
    p = rng.dirichlet(np.ones(k) * 0.3, size=k) + np.eye(k) * rng.uniform(0.5, 3, size=k)[:, None]
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("seed,lam", [(0, 1.0), (1, 1.0), (2, 1.5)])
def test_dafa_weights_are_calculate_class_weights(seed, lam):
    """The corrected rule on random class-similarity matrices (K = 10): batlit's dafa_weights equals
    the authors' loop and is zero-sum (ΣW = K); the rule before 74657cd differs and is not."""
    rng = np.random.default_rng(seed)
    p = _random_similarity(rng, 10)
    authors = dafa_weights_from_similarity(p, lam)
    ours = dafa_weights(torch.from_numpy(p), lam)
    torch.testing.assert_close(ours, torch.from_numpy(authors))
    assert float(ours.sum()) == pytest.approx(10, abs=1e-12)
    before_fix = dafa_weights_from_similarity(p, lam, fixed=False)
    assert not np.allclose(before_fix, authors) and abs(before_fix.sum() - 10) > 1e-3


def test_dafa_weights_with_tied_diagonals_subtract_on_both_sides():
    """Ties P[i,i] = P[j,j] take the ``else`` branch for both i and j: both lose, and ΣW falls short
    of K by exactly λ·(P[j,i]·P[i,i] + P[i,j]·P[j,j]) per tied pair."""
    rng = np.random.default_rng(3)
    diag = np.array([0.5, 0.5, 0.7, 0.3, 0.7])
    off = rng.uniform(0.1, 1, size=(5, 5))
    np.fill_diagonal(off, 0)
    p = off / off.sum(1, keepdims=True) * (1 - diag)[:, None] + np.diag(diag)
    authors = dafa_weights_from_similarity(p, 1.0)
    ours = dafa_weights(torch.from_numpy(p), 1.0)
    torch.testing.assert_close(ours, torch.from_numpy(authors))
    shortfall = sum(p[j, i] * p[i, i] + p[i, j] * p[j, j] for i, j in ((0, 1), (2, 4)))
    assert float(ours.sum()) == pytest.approx(5 - shortfall, abs=1e-12)


def test_dafa_collects_p_in_the_warmup_epoch_and_weights_from_the_next(monkeypatch):
    """warmup_epoch = 2: epoch 1 trains with W = 1 and records nothing; epoch 2's batches (W = 1)
    record the train-mode softmax of f(x'), the forward of the loss, before each step; after it W is
    the authors' calculate_class_weights of those rows; from epoch 3 the attack budget is W_y·ε and
    W_y·α. Examples, losses and weights equal the authors' at every batch."""
    method = DAFA(_bn_model(), attack=ATTACK, optimizer=OPT, lam=1.0, warmup_epoch=2)
    reference = copy.deepcopy(method.model)
    opt = torch.optim.SGD(method.model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    class_weights = torch.ones(K)
    memory = None
    for epoch in (1, 2):  # 1-based, as DAFA's train.py
        _at_epoch(monkeypatch, method, epoch - 1)
        assert method.attack_budget(torch.arange(K)) == (EPS, ALPHA)
        memory = {"probs": [], "labels": []} if epoch == 2 else None
        for seed in (1, 2):
            x, y = _batch(seed=seed)
            torch.manual_seed(seed)
            x_adv = method.perturb(x, y)
            opt.zero_grad()
            out = _objective_backward(method, x, y, x_adv)
            opt.step()
            torch.manual_seed(seed)
            ref_opt.zero_grad()
            ref_loss, ref_x_adv = dafa_trades_loss(reference, x, y, class_weights, EPS, ALPHA, STEPS, 6.0, memory)
            ref_loss.backward()
            ref_opt.step()
            torch.testing.assert_close(x_adv, ref_x_adv)
            torch.testing.assert_close(out["loss"], ref_loss)
        if epoch == 1:
            assert int(method.epoch_seen.sum()) == 0
        method.after_epoch(epoch)
    _assert_same_state(method.model, reference)
    memory = {k: np.concatenate(v) for k, v in memory.items()}
    authors = dafa_calculate_class_weights(memory, 1.0)
    torch.testing.assert_close(method.weight, torch.from_numpy(authors).float())
    torch.testing.assert_close(method.confusion_diag, torch.from_numpy(np.diag(dafa_class_similarity(**memory)).copy())
                               .float())
    assert not torch.allclose(method.weight, torch.ones(K))
    _at_epoch(monkeypatch, method, 2)  # 1-based epoch 3: W acts
    y = torch.arange(K)
    eps, step = method.attack_budget(y)
    torch.testing.assert_close(eps, EPS * method.weight)
    torch.testing.assert_close(step, ALPHA * method.weight)


def test_dafa_trades_step_after_the_warmup_is_the_authors(monkeypatch):
    """Past the warm-up: the attack with step W_y·α and box W_y·ε, the loss mean W_y·CE(f(x)) +
    β·mean KL (the KL unweighted), its gradients, and BatchNorm's running statistics of the
    authors' order (f(x') before f(x)), which the other order would not give."""
    x, y = _batch()
    w = torch.tensor([0.7, 1.3, 1.0, 1.05])
    method = DAFA(_bn_model(), attack=ATTACK, optimizer=OPT, lam=1.0, warmup_epoch=2)
    method.weight.copy_(w)
    _at_epoch(monkeypatch, method, 2)
    reference = copy.deepcopy(method.model)
    other_order = copy.deepcopy(method.model)
    torch.manual_seed(6)
    x_adv = method.perturb(x, y)
    torch.manual_seed(6)
    ref_loss, ref_x_adv = dafa_trades_loss(reference, x, y, w, EPS, ALPHA, STEPS, 6.0)
    torch.testing.assert_close(x_adv, ref_x_adv)
    torch.testing.assert_close((x_adv - x).abs().flatten(1).amax(1), EPS * w[y])
    out = _objective_backward(method, x, y, x_adv)
    ref_loss.backward()
    torch.testing.assert_close(out["loss"], ref_loss)
    _assert_same_grads(method.model, reference)
    _assert_same_state(method.model, reference)
    assert int(_bn(method.model).num_batches_tracked) == 2
    other_order.train()
    other_order(x)
    other_order(x_adv)
    assert not torch.allclose(_bn(other_order).running_mean, _bn(method.model).running_mean)


def test_dafa_pgd_at_attack_differs_by_the_leftover_step(monkeypatch):
    """Deliberate: madry_loss's attack adds, after each class-wise step, an unscaled step projected
    onto the plain ε-box (and starts from x + 0.001·N): its perturbation is bounded by
    min(ε, W_y·ε + α), so a class with W_y > 1 never gets its larger box and one with W_y < 1 goes
    past W_y·ε. batlit's pgd_at base starts uniformly in the W_y·ε-box and stays in it. The loss,
    mean W_y·CE(f(x'), y) from one train-mode forward, is the authors' on the same examples."""
    x, y = _batch()
    w = torch.tensor([0.6, 1.4, 1.0, 0.8])
    method = DAFA(_bn_model(), attack=ATTACK, optimizer=OPT, base="pgd_at", lam=1.0, warmup_epoch=1)
    method.weight.copy_(w)
    _at_epoch(monkeypatch, method, 1)
    reference = copy.deepcopy(method.model)
    torch.manual_seed(2)
    x_adv = method.perturb(x, y)
    ours = (x_adv - x).abs().flatten(1).amax(1)
    torch.testing.assert_close(ours, EPS * w[y])  # batlit: exactly the class-wise box, reached
    torch.manual_seed(2)
    authors_adv = dafa_madry_attack(reference, x, y, w, EPS, ALPHA, STEPS)
    authors = (authors_adv - x).abs().flatten(1).amax(1)
    bound = torch.minimum(torch.full_like(authors, EPS), EPS * w[y] + ALPHA)
    assert bool((authors <= bound + 1e-6).all())
    small, large = w[y] < 1, w[y] > 1
    assert bool((authors[small] > EPS * w[y][small] + 1e-4).all())  # past its smaller box
    assert bool((authors[large] <= EPS + 1e-6).all()) and bool((ours[large] > EPS + 1e-4).all())
    out = _objective_backward(method, x, y, x_adv)
    ref_loss = dafa_madry_loss(reference, x_adv, y, w)
    ref_loss.backward()
    torch.testing.assert_close(out["loss"], ref_loss)
    _assert_same_grads(method.model, reference)
    _assert_same_state(method.model, reference)


# ==== FAAL (TrustAI/FAAL) =============================================================================

def faal_pgd_attack(model, X, y, epsilon, alpha, attack_iters, restarts=1):
    """utils.py ``pgd_attack`` (the caller set eval mode): δ ~ U(−ε, ε) clipped to [−x, 1 − x];
    CE (mean) sign steps clipped to [−ε, ε] and [−x, 1 − x]; the restart with the largest loss."""
    max_loss = torch.zeros(y.shape[0], device=X.device)
    max_delta = torch.zeros_like(X)
    for _ in range(restarts):
        delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
        delta = torch.clamp(delta, 0 - X, 1 - X).requires_grad_(True)
        for _ in range(attack_iters):
            (grad,) = torch.autograd.grad(F.cross_entropy(model(X + delta), y), delta)
            d = torch.clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon)
            delta = torch.clamp(d, 0 - X, 1 - X).detach().requires_grad_(True)
        with torch.no_grad():
            all_loss = F.cross_entropy(model(X + delta), y, reduction="none")
        max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
        max_loss = torch.max(max_loss, all_loss)
    return max_delta


def faal_cw(outputs, y):
    """utils.py ``cw``: max_{j≠y} softmax_j − softmax_y (K − 1 others; the authors' reshape(−1, 9))."""
    outputs = F.softmax(outputs, 1)
    label_mask = F.one_hot(y, outputs.shape[1]).to(torch.bool)
    label_logit = outputs[label_mask]
    others = outputs[~label_mask].reshape(-1, outputs.shape[1] - 1)
    return others.max(dim=1).values - label_logit


def faal_solve_weight(y, class_margin, r, k):
    """FAAL.py ``DAW(train_batch_size=k, r_choice=r).solve_weight(y, class_margin)``: maximise
    Σ_i p[y_i]·c̄[y_i] over p ≥ 0, Σ p = 1, Σ_k kl_div(1/k, p_k) ≤ r (cvxpy's kl_div(x, y) =
    x·log(x/y) − x + y, which on the simplex is KL(U ‖ p)); cvxpy/ECOS replaced by SLSQP over
    p = softmax(z), so that the simplex holds by construction. r ≤ 0: uniform.

    Why softmax: SLSQP over p itself starts at U, where the KL constraint's gradient is 0, and
    fails on about a third of random batches ("Positive directional derivative"). Over z it ends
    either converged (status 0) or at a point its line search cannot improve (status 8), both within
    4e-6 of the optimum on 3,000 random problems; anything else fails the test."""
    if r <= 0:
        return torch.full((k,), 1 / k)
    y = np.asarray(y)
    margin = np.asarray(class_margin, dtype=np.float64)
    coef = np.zeros(k)
    np.add.at(coef, y, margin[y])  # the objective's coefficients of p: n_k·c̄_k

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def kl_uniform(z):
        return -np.mean(np.log(softmax(z))) - np.log(k)

    def neg_objective_grad(z):
        p = softmax(z)
        return -p * (coef - p @ coef)

    z0 = 1e-3 * (coef - coef.mean()) / max(np.abs(coef).max(), 1e-12)  # off U: a nonzero KL gradient
    res = minimize(lambda z: -coef @ softmax(z), z0, jac=neg_objective_grad, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda z: r - kl_uniform(z),
                                 "jac": lambda z: 1 / k - softmax(z)}],
                   options={"ftol": 1e-15, "maxiter": 2000})
    assert res.status in (0, 8), res.message
    assert kl_uniform(res.x) <= r + 1e-9, (kl_uniform(res.x), r)
    return torch.from_numpy(softmax(res.x)).float()


def faal_class_margin(loss_margin, y, k):
    """ft_prn.py: per-class mean margin of the batch, NaN (an absent class) → −1."""
    class_margin = torch.zeros(k, device=loss_margin.device)
    for cc in range(k):
        members = loss_margin[y == cc]
        class_margin[cc] += members.mean() if len(members) else float("nan")
    return torch.where(torch.isnan(class_margin), -torch.ones_like(class_margin), class_margin)


def faal_batch_loss(model, X, X_adv, y, r, k, loss="AT", beta=6.0):
    """ft_prn.py's batch after the attack: model.train(); output = f(X_adv); output_clean = f(X)
    (always made); margins cw(output, y); DAW weights; loss (K/B)·Σ_i p[y_i]·ℓ_i with ℓ the CE of
    f(X_adv) (AT) or 6·KL(f(X) ‖ f(X_adv)) + CE(f(X)) (TRADES). Returns (loss, p, margins)."""
    model.train()
    output = model(X_adv)
    output_clean = model(X)
    loss_margin = faal_cw(output, y)
    class_margin = faal_class_margin(loss_margin.detach(), y, k)
    weights = faal_solve_weight(y.cpu(), class_margin.cpu(), r, k).to(X.device)
    if loss == "AT":
        per_sample = nn.CrossEntropyLoss(reduction="none")(output, y)
    else:
        per_sample = F.kl_div(F.log_softmax(output, dim=1), F.softmax(output_clean, dim=1),
                              reduction="none").sum(1) * beta + nn.CrossEntropyLoss(reduction="none")(output_clean, y)
    return (per_sample * weights[y]).sum() * k / len(y), weights, loss_margin


def _faal_inputs(seed, k=10, b=32):
    """A batch's labels (two classes absent) and per-class mean margins, as ft_prn.py builds them."""
    rng = np.random.default_rng(seed)
    present = rng.permutation(k)[: k - 2]
    y = torch.from_numpy(rng.choice(present, size=b))
    margins = torch.from_numpy(rng.uniform(-1, 1, size=b)).float()
    counts = torch.bincount(y, minlength=k).float()
    return y, margins, counts, faal_class_margin(margins, y, k)


@pytest.mark.parametrize("r", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faal_weights_are_the_dro_solution(seed, r):
    """faal_weights(counts, margins, r), the closed form, against DAW's problem solved by a generic
    solver (K = 10, absent classes): the same p, an objective at least as high, KL(U ‖ p) = r."""
    y, _, counts, class_margin = _faal_inputs(seed)
    ours = faal_weights(counts, class_margin, r)
    authors = faal_solve_weight(y, class_margin, r, 10)
    torch.testing.assert_close(ours, authors, atol=2e-4, rtol=0)
    coef = counts * class_margin  # the objective's coefficients; 0 for an absent class
    assert float(coef @ ours) >= float(coef @ authors) - 1e-5
    assert float(kl_uniform_to(ours.double())) == pytest.approx(r, rel=1e-6)
    assert float(ours.sum()) == pytest.approx(1, abs=1e-6)
    absent = counts == 0
    other_fill = torch.where(absent, torch.full_like(class_margin, 0.7), class_margin)
    torch.testing.assert_close(faal_weights(counts, other_fill, r), ours)  # the −1 fill never enters


def test_faal_weights_degenerate_cases_are_uniform():
    """Equal coefficients (equal margins and counts, or margins all 0) and r = 0 give U."""
    uniform = torch.full((10,), 0.1)
    counts = torch.full((10,), 3.0)
    equal = torch.full((10,), -0.4)
    torch.testing.assert_close(faal_weights(counts, equal, 0.5), uniform)
    y = torch.arange(10).repeat(3)
    torch.testing.assert_close(faal_solve_weight(y, equal, 0.5, 10), uniform, atol=1e-6, rtol=0)
    varied = torch.tensor([1.0, 5, 2, 3, 0, 4, 1, 2, 6, 3])
    torch.testing.assert_close(faal_weights(varied, torch.zeros(10), 2.0), uniform)
    y, _, counts, class_margin = _faal_inputs(4)
    torch.testing.assert_close(faal_weights(counts, class_margin, 0.0), uniform)
    torch.testing.assert_close(faal_solve_weight(y, class_margin, 0.0, 10), uniform)


@pytest.mark.parametrize("absent", [False, True])
def test_faal_at_step_is_the_authors(absent):
    """PGD-AT base: the attack (eval mode, uniform start), the margins of the train-mode adversarial
    logits, p, the loss (K/B)Σ p_y·CE and its gradients. Deliberate: the authors' batch also runs an
    unused clean train-mode forward, so their BatchNorm statistics take one more step towards the
    clean batch; batlit's are those of the adversarial forward alone."""
    x, y = _batch()
    if absent:
        y = torch.where(y == 3, torch.zeros_like(y), y)  # class 3 absent from the batch
    method = FAAL(_bn_model(), attack=ATTACK, optimizer=OPT, base="pgd_at", r=0.5)
    reference = copy.deepcopy(method.model)
    adversarial_only = copy.deepcopy(method.model)
    torch.manual_seed(8)
    x_adv = method.perturb(x, y)
    torch.manual_seed(8)
    reference.eval()
    ref_x_adv = (x + faal_pgd_attack(reference, x, y, EPS, ALPHA, STEPS)).clamp(0, 1)
    torch.testing.assert_close(x_adv, ref_x_adv)
    out = _objective_backward(method, x, y, x_adv)
    ref_loss, ref_p, ref_margins = faal_batch_loss(reference, x, ref_x_adv, y, 0.5, K)
    ref_loss.backward()
    torch.testing.assert_close(out["loss"], ref_loss, atol=1e-4, rtol=1e-4)
    _assert_same_grads(method.model, reference, atol=1e-4, rtol=1e-3)
    with torch.no_grad():  # batlit's margins from a train-mode forward on x' alone are the authors'
        torch.testing.assert_close(probability_margins(adversarial_only.train()(x_adv), y), ref_margins)
    torch.testing.assert_close(method.weight_sum, K * ref_p, atol=1e-3, rtol=0)
    _assert_same_state(method.model, adversarial_only)  # f(x') alone
    assert int(_bn(reference).num_batches_tracked) == 2 and int(_bn(method.model).num_batches_tracked) == 1
    assert not torch.allclose(_bn(reference).running_mean, _bn(method.model).running_mean)


def test_faal_trades_loss_is_the_authors():
    """TRADES base (no script of the authors uses it): (K/B)Σ p_y·(CE(f(x)) + 6·KL(f(x) ‖ f(x'))),
    p from the train-mode adversarial logits; loss and gradients."""
    x, y = _batch()
    method = FAAL(_bn_model(), attack=ATTACK, optimizer=OPT, base="trades", r=0.5)
    reference = copy.deepcopy(method.model)
    torch.manual_seed(8)
    x_adv = method.perturb(x, y)
    torch.manual_seed(8)
    ref_x_adv = wat_trades_attack(copy.deepcopy(reference), x, EPS, ALPHA, STEPS)  # FAAL's attack_trade: the same
    torch.testing.assert_close(x_adv, ref_x_adv)
    out = _objective_backward(method, x, y, x_adv)
    ref_loss, _, _ = faal_batch_loss(reference, x, x_adv, y, 0.5, K, loss="TRADES")
    ref_loss.backward()
    torch.testing.assert_close(out["loss"], ref_loss, atol=1e-4, rtol=1e-4)
    _assert_same_grads(method.model, reference, atol=1e-4, rtol=1e-3)


def test_faal_trades_forwards_are_the_authors():
    """The authors' FAAL batch makes two train-mode forwards, f(x') then f(x): BatchNorm's running
    statistics follow that order (TRADES' three forwards would move them otherwise)."""
    x, y = _batch()
    method = FAAL(_bn_model(), attack=ATTACK, optimizer=OPT, base="trades", r=0.5)
    reference = copy.deepcopy(method.model)
    x_adv = method.perturb(x, y)
    _objective_backward(method, x, y, x_adv)
    faal_batch_loss(reference, x, x_adv, y, 0.5, K, loss="TRADES")
    _assert_same_state(method.model, reference)


# ==== the KL attacks' start ============================================================================

def test_the_kl_attack_starts_outside_the_image_as_the_authors():
    """The authors' KL attacks (TRADES, FRL, CFA, WAT, DAFA, FAAL) take their first gradient at
    x + 0.001·N as drawn, outside [0, 1] where a pixel is saturated (0 or 1, common in CIFAR-10);
    batlit does too (``project_start=False``). Clamping that start is not a local change: the KL's
    gradient near x is linear in the start's offset, so clamping a few pixels changes the first
    step's signs across the image and a share of the unsaturated pixels ends elsewhere."""
    x, y = _batch()
    x[:, :, 0, :2] = 0.0  # saturated pixels
    x[:, :, 3, 2:] = 1.0
    method = WAT(_plain_model(), attack=ATTACK, optimizer=OPT)
    torch.manual_seed(11)
    ours = method.perturb(x, y)
    torch.manual_seed(11)
    authors = wat_trades_attack(copy.deepcopy(method.model), x, EPS, ALPHA, STEPS)
    torch.testing.assert_close(ours, authors)
    torch.manual_seed(11)
    clamped = wat_trades_attack(copy.deepcopy(method.model), x, EPS, ALPHA, STEPS, clamp_start=True)
    saturated = (x == 0) | (x == 1)
    moved = (clamped - authors).abs() > 1e-6
    assert float(moved[~saturated].float().mean()) > 0.05  # the clamp would matter


# ==== the experiments' recipes =========================================================================

def _cfa_lr(epoch: int, epochs: int = 200, lr_max: float = 0.1) -> float:
    """PKU-ML/CFA train.py ``lr_schedule(t)`` with the 0-based t = epoch − 1."""
    t = epoch - 1
    if t / epochs < 0.5:
        return lr_max
    if t / epochs < 0.75:
        return lr_max / 10.0
    return lr_max / 100.0


def _wat_lr(epoch: int, lr: float = 0.1) -> float:
    """boqili/WAT ``adjust_learning_rate(optimizer, epoch + 1)``: ``epoch`` here is that epoch + 1."""
    out = lr
    if epoch >= 75:
        out = lr * 0.1
    if epoch >= 90:
        out = lr * 0.01
    if epoch >= 100:
        out = lr * 0.001
    return out


def _dafa_lr(epoch: int, epochs: int = 110, lr: float = 0.1) -> float:
    """rucy74/DAFA ``adjust_learning_rate`` ('bag_of_tricks'), 1-based epochs."""
    out = lr
    if epoch >= epochs - 10:
        out = lr * 0.1
    if epoch >= epochs - 5:
        out = lr * 0.01
    return out


def _faal_lrs(epochs: int = 2, lr_max: float = 0.01) -> list[float]:
    """TrustAI/FAAL ft_prn.py: MultiStepLR(milestones=[epochs / 2], gamma=0.1), stepped after each epoch."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=lr_max)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[epochs * 1 / 2], gamma=0.1)
    lrs = []
    with _quiet():
        for _ in range(epochs):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return lrs


RECIPES = {
    # lr per 1-based epoch; (ε, steps, step) of the training attack; SGD's weight decay and Nesterov;
    # the validation split's size; the method's settings
    "cfa_cifar10": (lambda n: [_cfa_lr(e) for e in range(1, n + 1)], (8 / 255, 10, 2 / 255), 5e-4, False, 1000,
                    {"base": "trades", "ccm": True, "ccr": False, "lambda1": 0.5, "lambda2": 0.5, "begin": 10,
                     "beta": 6.0, "fawa": True, "decay": 0.88, "reuse_clean_logits": False, "fused_forward": False}),
    "wat_cifar10": (lambda n: [_wat_lr(e) for e in range(1, n + 1)], (0.031, 10, 0.007), 2e-4, False, 3000,
                    {"base": "trades", "eta": 0.1, "beta": 6.0, "reuse_clean_logits": True, "fused_forward": False}),
    "dafa_cifar10": (lambda n: [_dafa_lr(e) for e in range(1, n + 1)], (0.031, 10, 0.007), 5e-4, True, 0,
                     {"base": "trades", "lam": 1.0, "warmup_epoch": 70, "beta": 6.0, "fused_forward": False}),
    "faal_cifar10": (lambda n: _faal_lrs(n), (8 / 255, 10, 2 / 255), 5e-4, False, 0,
                     {"base": "pgd_at", "r": 0.5}),
}


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_each_experiment_is_its_authors_recipe(experiment):
    """The paper config against the authors' scripts: the lr of every epoch (the scheduler stepped as
    Lightning steps it), the training attack, SGD, batch 128, the validation split and the method's
    settings (CFA's FAWA check: PGD-10, step 2/255 at 8/255, as the authors' eval_epoch)."""
    from omegaconf import OmegaConf

    from batlit.methods import Standard
    from conftest import compose_config as _compose

    lrs, (eps, steps, step), weight_decay, nesterov, val_size, method = RECIPES[experiment]
    cfg = _compose(f"experiment={experiment}")
    standard = Standard(_plain_model(), attack=ATTACK, optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
                        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True))
    setup = standard.configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    ours = []
    with _quiet():  # lr_scheduler.step() before optimizer.step(): no training here
        for _ in range(cfg.epochs):
            ours.append(optimizer.param_groups[0]["lr"])
            schedule.step()
    assert ours == pytest.approx(lrs(cfg.epochs), rel=1e-9)
    train_eps = cfg.attack.train.eps if cfg.attack.train.eps is not None else cfg.attack.eps
    assert (train_eps, cfg.attack.train.steps, cfg.attack.train.step_size) == pytest.approx((eps, steps, step))
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, pytest.approx(weight_decay), nesterov)
    assert cfg.data.batch_size == 128 and cfg.data.val_size == val_size
    assert {k: cfg.method[k] for k in method} == method
    if experiment == "cfa_cifar10":
        assert (cfg.attack.eps, cfg.attack.val.steps, cfg.attack.val.step_size) == pytest.approx((8 / 255, 10, 2 / 255))
        cfa = CFA(_plain_model(), attack=ATTACK, optimizer=OPT,
                  **{k: v for k, v in OmegaConf.to_container(cfg.method).items() if k != "_target_"})
        assert cfa.threshold == 0.24  # train.py's default for its default mode, TRADES
