"""A callback the DDP test adds (``+callbacks.dump._target_=rank_state.DumpMethodState``): each
process writes the method's global state (FRL's multipliers) as it ends training."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class DumpMethodState(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in pl_module.named_buffers() if k.startswith("lambda_")}
        torch.save({"world_size": trainer.world_size, **state}, self.out_dir / f"rank{trainer.global_rank}.pt")
