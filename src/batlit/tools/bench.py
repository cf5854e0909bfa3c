"""Training-step benchmark: ``python -m batlit.bench model=<m> data=<d> batch_size=<n> out=<json>``.

For each method, one full training step (attack in eval mode, objective in train mode, backward,
SGD step) on one fixed batch already on the device; warm-up steps excluded, the median of
``repeats``. ``reference_bat`` is the BAT authors' algorithm as docs/design.md §5.1 describes it — two
independent early-stopping trajectories with per-sample Python loops and compaction — written
here from that description to measure what one batched trajectory saves.
"""

from __future__ import annotations

import copy
import json
import platform
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict

from .. import methods
from ..config import ConfigError, exit_on_user_error, hardware, register_resolvers, resolve_device
from ..models import Normalize
from ..models.fold import set_batchnorm_folding

register_resolvers()

METHODS = {"standard": "Standard", "pgd_at": "PGDAT", "trades": "TRADES", "bat": "BAT"}
# BAT with its attack run the other ways boundary_pgd offers (the same examples): fixed samples
# frozen in place with an early exit, or frozen and all K steps with no host sync.
VARIANTS = {"bat_frozen": {"compact": False}, "bat_nosync": {"compact": False, "early_exit": False}}
CHOICES = (*METHODS, *VARIANTS, "reference_bat")


def reference_trajectory(model, x, y, *, eps, step_size, steps, init_std, tau, output):
    """One of the authors' two loops: a per-sample Python check each step, stopped samples removed.

    ``output="last_clean"`` returns x_{k*-1} (x_0 if k* = 0, x_K if never); ``"first_adv"`` the
    iterate at the (τ+1)-th misclassified evaluation (x_K if fewer). Outputs in input order.
    """
    with torch.no_grad():
        clean_probs = F.softmax(model(x), dim=1)
    x_k = (x + init_std * torch.randn_like(x)).clamp(0, 1)
    result = x_k.clone()
    remaining = list(range(len(x)))
    count = [0] * len(x)
    prev = x_k.clone()
    for k in range(steps):
        idx = torch.tensor(remaining, device=x.device)
        cur = x_k[idx].detach().requires_grad_(True)
        logits = model(cur)
        loss = F.kl_div(F.log_softmax(logits, 1), clean_probs[idx], reduction="sum")
        (grad,) = torch.autograd.grad(loss, cur)
        pred = logits.argmax(1).tolist()
        labels = y[idx].tolist()
        keep = []
        for j, i in enumerate(remaining):               # the per-sample Python loop
            if pred[j] != labels[j]:
                if output == "last_clean":
                    result[i] = prev[i] if k > 0 else x_k[i]
                    continue
                count[i] += 1
                if count[i] == tau + 1:
                    result[i] = x_k[i]
                    continue
            keep.append(j)
        with torch.no_grad():
            step = cur.detach() + step_size * grad.sign()
            step = torch.min(torch.max(step, x[idx] - eps), x[idx] + eps).clamp(0, 1)
            prev[idx] = x_k[idx]
            x_k[idx] = step
        remaining = [remaining[j] for j in keep]
        if not remaining:
            break
    for i in remaining:
        result[i] = x_k[i]
    return result.detach()


def _build(name: str, model, cfg: DictConfig):
    attack = OmegaConf.to_container(cfg.attack, resolve=True)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    cls = getattr(methods, METHODS.get(name, "BAT"))
    method = cls(model, attack=attack, optimizer=optimizer, scheduler={"name": "constant"}, **VARIANTS.get(name, {}))
    if name == "reference_bat":
        def perturb(x, y, m=method):
            kw = dict(eps=m.train_attack["eps"], step_size=m.train_attack["step_size"], steps=m.train_attack["steps"],
                      init_std=m.init_std, tau=m.tau)
            was = model.training
            model.eval()
            with torch.enable_grad():
                lc = reference_trajectory(model, x, y, output="last_clean", **kw)
                fa = reference_trajectory(model, x, y, output="first_adv", **kw)
            model.train(was)
            return {"x": x, "last_clean": lc, "first_adv": fa}
        method.perturb = perturb
    return method


class StepTimer:
    """One method's training steps (attack in eval mode, objective, backward, SGD) on one batch."""

    def __init__(self, method, x, y, autocast: Callable, sync: Callable) -> None:
        self.method, self.x, self.y, self.autocast, self.sync = method, x, y, autocast, sync
        self.optimizer = torch.optim.SGD(method.model.parameters(), lr=0.01, momentum=0.9)
        method.model.train()

    def step(self) -> float:
        self.sync()
        start = time.perf_counter()
        with self.autocast():
            examples = self.method.perturb(self.x, self.y)
            loss = self.method.objective(self.x, self.y, examples)["loss"]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return time.perf_counter() - start


# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), in FLOP/s, for the
# achieved fraction of peak; a card not listed gets none.
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def bf16_peak(device_name: str) -> float | None:
    return next((v for k, v in BF16_PEAK_FLOPS.items() if k in device_name), None)


def _flop_counter():
    """A dispatch mode summing the FLOPs of matmuls and convolutions with torch's own formulas
    (``torch.utils.flop_counter.flop_registry``). FlopCounterMode itself also tracks modules with
    backward hooks, which ``autograd.grad`` on an input leaf (every attack) does not support."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class FlopCount(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += int(formula(*args, **kwargs, out_val=out))
            return out

    return FlopCount()


def count_step_flops(method, x, y, autocast: Callable) -> int:
    """FLOPs of one training step as executed (early stops included): the matmuls and convolutions
    of every forward and backward, attack and update alike."""
    with _flop_counter() as counter:
        with autocast():
            examples = method.perturb(x, y)
            loss = method.objective(x, y, examples)["loss"]
        loss.backward()
    method.model.zero_grad(set_to_none=True)  # counted, not applied
    return counter.total


def profile_step(method, x, y, autocast: Callable, rows: int = 12) -> list[dict[str, Any]]:
    """One training step under torch.profiler: the ``rows`` operators with the most self time
    (CPU, or CUDA on a GPU), each with its share of the step and its number of calls."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = x.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.01, momentum=0.9)
    with profile(activities=activities) as prof:
        with autocast():
            loss = method.objective(x, y, method.perturb(x, y))["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()
    attr = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    total = sum(getattr(e, attr) for e in events) or 1.0
    return [{"op": e.key, "self_ms": getattr(e, attr) / 1000, "share": getattr(e, attr) / total, "calls": e.count}
            for e in events[:rows]]


def forward_flops_per_image(model, x) -> float:
    model.eval()
    with torch.no_grad(), _flop_counter() as counter:
        model(x)
    return counter.total / len(x)


def resolve_switches(precision: Any, channels_last: Any, device: torch.device) -> tuple[str, bool]:
    """``auto``: bf16 and channels_last where the device computes bf16 fast (a GPU, or a CPU with
    bf16 in hardware: ``batlit.config.fast_bf16``), else fp32 and contiguous — what training uses."""
    fast = (torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else hardware.cpu_has_bf16())
    precision = ("bf16" if fast else "32") if str(precision) == "auto" else str(precision)
    channels_last = fast if str(channels_last) == "auto" else bool(channels_last)
    return precision, channels_last


def _layout(base_model, x, device, precision: str, channels_last: bool, fold_batchnorm: bool):
    """The model and batch in one memory layout, the attacks' BatchNorm folding on or off, and the
    autocast of one precision."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = set_batchnorm_folding(copy.deepcopy(base_model), fold_batchnorm)
    for module in model.modules():  # the bench's switch decides the layout, not model.channels_last
        if isinstance(module, Normalize):
            module.channels_last = channels_last
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    return model.to(device, memory_format=memory_format), x.contiguous(memory_format=memory_format), autocast


def time_methods(cfg: DictConfig, base_model, x, y, device,
                 settings: list[tuple[str, bool, bool]]) -> list[dict[str, Any]]:
    """Every method of ``cfg.methods`` timed on the batch in each (precision, channels_last,
    fold_batchnorm) setting.

    The settings take turns step by step (A, B, A, B, ...), so that a machine whose speed drifts
    (a shared VM, a CPU changing its clock) slows every setting alike and their ratio holds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak = bf16_peak(device_name) if device.type == "cuda" else None
    layouts = [_layout(base_model, x, device, *setting) for setting in settings]
    results: list[dict[str, Any]] = [{} for _ in settings]
    for name in cfg.methods:
        timers = []
        for model, xs, autocast in layouts:
            torch.manual_seed(cfg.seed)
            timers.append(StepTimer(_build(name, copy.deepcopy(model), cfg).to(device), xs, y, autocast, sync))
        times: list[list[float]] = [[] for _ in settings]
        for i in range(cfg.warmup + cfg.repeats):
            for timer, recorded in zip(timers, times):
                elapsed = timer.step()
                if i >= cfg.warmup:
                    recorded.append(elapsed)
        for k, ((precision, channels_last, folded), timer) in enumerate(zip(settings, timers)):
            method, xs, autocast = timer.method, timer.x, timer.autocast
            median = statistics.median(times[k])
            entry = {"seconds_per_step": median, "images_per_s": len(xs) / median, "times": times[k]}
            if device.type == "cuda":  # one more step alone: the steps above ran interleaved
                torch.cuda.reset_peak_memory_stats()
                timer.step()
                entry["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            entry["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if cfg.count_flops:  # after timing, on the same batch: the attack's early stops count as run
                flops = count_step_flops(method, xs, y, autocast)
                entry["flops_per_step"] = flops
                entry["achieved_tflops"] = flops / median / 1e12
                if peak is not None:
                    entry["fraction_of_bf16_peak"] = flops / median / peak
            if cfg.get("profile"):  # after timing: where one step's time goes, by operator
                entry["profile"] = profile_step(method, xs, y, autocast, int(cfg.profile_rows))
            if name.startswith("bat"):
                stats = method.steps_to_boundary.compute()
                entry["mean_steps_to_boundary"] = float(stats["mean"])
                entry["never_misclassified"] = float(stats["never"])
            results[k][name] = entry
            flops_note = f" {entry['achieved_tflops']:8.2f} TFLOP/s" if "achieved_tflops" in entry else ""
            if "fraction_of_bf16_peak" in entry:
                flops_note += f" ({100 * entry['fraction_of_bf16_peak']:.1f}% of bf16 peak)"
            layout = f"{precision}{' + channels_last' if channels_last else ''}{' + folded BN' if folded else ''}"
            print(f"{name:<14} {layout:<36} {median * 1000:10.1f} ms/step {len(xs) / median:10.1f} images/s"
                  f"{flops_note}", flush=True)
            for row in entry.get("profile", [])[:5]:
                print(f"    {row['op']:<44} {row['self_ms']:9.1f} ms {100 * row['share']:5.1f}%  x{row['calls']}")
    return results


def run(cfg: DictConfig) -> dict[str, Any]:
    unknown = [m for m in cfg.methods if m not in CHOICES]
    if unknown:
        raise ConfigError(f"methods: unknown {unknown}; choose from {list(CHOICES)}")
    for key in ("batch_size", "repeats"):
        if not (isinstance(cfg[key], int) and cfg[key] >= 1):
            raise ConfigError(f"{key} must be an integer >= 1, got {cfg[key]!r}")
    if str(cfg.precision) not in ("auto", "32", "bf16"):
        raise ConfigError(f"precision must be auto, 32 or bf16, got {cfg.precision!r}")
    if str(cfg.channels_last) not in ("auto", "True", "False"):
        raise ConfigError(f"channels_last must be auto, true or false, got {cfg.channels_last!r}")
    import lightning as L

    L.seed_everything(cfg.seed, verbose=False)
    device = resolve_device(cfg.device)
    trained = None
    if cfg.ckpt:  # before any data: a refused checkpoint costs a second
        from ..checkpoint.store import load_run

        trained = load_run(cfg.ckpt)
    datamodule = hydra.utils.instantiate(cfg.data, batch_size=cfg.batch_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    with open_dict(cfg):
        if cfg.data.get("num_classes") is None:
            cfg.data.num_classes = datamodule.num_classes
    x, y = next(iter(datamodule.train_dataloader()))
    x, y = x.to(device), y.to(device)
    base_model = trained.model if trained is not None else hydra.utils.instantiate(cfg.model, channels_last=False)
    precision, channels_last = resolve_switches(cfg.precision, cfg.channels_last, device)
    folded = any(getattr(m, "fold_batchnorm", False) for m in base_model.modules())
    settings = [(precision, channels_last, folded)]
    if cfg.get("baseline") and settings[0] != ("32", False, False):  # side by side with the plain algorithm:
        settings.append(("32", False, False))                        # fp32, contiguous, BatchNorm unfolded
    results, *rest = time_methods(cfg, base_model, x, y, device, settings)
    baseline = rest[0] if rest else None
    ratios = {}
    if "bat" in results and "pgd_at" in results:
        ratios["bat_over_pgd_at"] = results["bat"]["seconds_per_step"] / results["pgd_at"]["seconds_per_step"]
    if "bat" in results and "reference_bat" in results:
        ratios["reference_over_bat"] = results["reference_bat"]["seconds_per_step"] / results["bat"]["seconds_per_step"]
    for name, entry in results.items() if baseline else ():
        ratios[f"{name}_speedup_over_fp32"] = baseline[name]["seconds_per_step"] / entry["seconds_per_step"]
    for key, value in ratios.items():
        print(f"{key:<28} {value:.3f}")
    picked = {k: v for k, v in hydra.core.hydra_config.HydraConfig.get().runtime.choices.items()
              if k in ("model", "data")}
    peak = bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    record = {
        "model": picked.get("model"), "data": picked.get("data"), "batch_size": len(x),
        "image_shape": list(x.shape[1:]), "device": torch.cuda.get_device_name() if device.type == "cuda" else
        f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "precision": precision, "channels_last": channels_last, "fold_batchnorm": folded, "warmup": cfg.warmup,
        "repeats": cfg.repeats, "attack": OmegaConf.to_container(cfg.attack.train), "eps": cfg.attack.eps,
        "torch_version": torch.__version__, "methods": results, "ratios": ratios,
        "fp32_contiguous": baseline,
        "model_forward_gflops_per_image": forward_flops_per_image(copy.deepcopy(base_model).to(device), x) / 1e9,
        "bf16_peak_tflops": peak / 1e12 if peak else None,
    }
    print(f"model forward  {record['model_forward_gflops_per_image']:.3f} GFLOP per image")
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(record, indent=2))
        print(f"written to {cfg.out}")
    return record


@hydra.main(version_base="1.3", config_path="pkg://batlit.conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run, cfg)


if __name__ == "__main__":
    main()
