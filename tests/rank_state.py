"""A callback the DDP tests add (``+callbacks.dump._target_=rank_state.DumpMethodState``): each
process writes the method's global state as it ends training: the class-wise state (FRL's
multipliers, CFA's margins, FAAL's weights, ...) and CFA's averaged weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class DumpMethodState(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        names = set(getattr(pl_module, "class_state_names", ()))
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()
                 if k in names or k.startswith("averaged_model.")}
        torch.save({"world_size": trainer.world_size, **state}, self.out_dir / f"rank{trainer.global_rank}.pt")
