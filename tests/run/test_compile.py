"""``compile=true`` compiles few graphs, whatever batch sizes the attacks reach.

A counting backend stands in for inductor (no code generation on the CPU test machine): each
graph dynamo hands it is one compilation. Two BAT steps (compaction shrinks the batch at every
attack step) and a PGD-AT step, under bf16 autocast as a mixed-precision run, then an evaluation
forward, stay within a handful of graphs and far from torch's recompile limit.
"""

from __future__ import annotations

import warnings

import torch

from batlit.methods import BAT, PGDAT
from batlit.models import small_cnn
from batlit.train import compile_model

ATTACK = {"eps": 8 / 255, "train": {"steps": 10, "step_size": 2 / 255}, "val": {"steps": 2, "step_size": 2 / 255},
          "test": {"steps": 2, "step_size": 2 / 255}}


def test_two_bat_steps_and_a_pgd_at_step_compile_few_graphs():
    import torch._dynamo as dynamo

    graphs = []

    def counting(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    dynamo.reset()
    torch.manual_seed(0)
    model = compile_model(small_cnn(num_classes=10, in_channels=3, width=4), backend=counting)

    def steps(batch: int) -> None:  # two BAT steps, a PGD-AT step and an evaluation forward
        for cls in (BAT, BAT, PGDAT):
            method = cls(model.train(), attack=ATTACK, optimizer={"name": "sgd", "lr": 0.1})
            x, y = torch.rand(batch, 3, 16, 16), torch.randint(0, 10, (batch,))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                examples = method.perturb(x, y)
                loss = method.objective(x, y, examples)["loss"]
            loss.backward()
        with torch.no_grad():
            model.eval()(torch.rand(batch - 1, 3, 16, 16))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps(32)
        first = len(graphs)
        steps(24)  # other batch sizes, other compactions: no graph is compiled for a size, except
        steps(40)  # at most one for a compacted batch of 1 (dynamo specialises sizes 0 and 1)
    assert 1 <= first <= 6 and len(graphs) - first <= 1, graphs
    assert not [w for w in caught if "recompil" in str(w.message).lower()]
    dynamo.reset()
