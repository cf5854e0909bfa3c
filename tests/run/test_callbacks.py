"""The callbacks' numbers on a stand-in trainer and clock (gaps found by scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

from types import SimpleNamespace

from batlit.callbacks import EpochThroughput, per_class_rows


def test_epoch_throughput_leaves_the_validation_time_out(monkeypatch):
    clock = iter([100.0, 110.0, 115.0, 120.0])   # epoch start, validation start and end, epoch end
    monkeypatch.setattr(EpochThroughput, "_now", staticmethod(lambda pl_module: next(clock)))
    logged = {}
    module = SimpleNamespace(log_dict=lambda values, **kw: logged.update(values))
    trainer = SimpleNamespace(sanity_checking=False)
    cb = EpochThroughput()
    cb.on_train_epoch_start(trainer, module)
    for _ in range(3):
        cb.on_train_batch_end(trainer, module, None, (None, [0] * 10), 0)
    cb.on_validation_start(trainer, module)
    cb.on_validation_end(trainer, module)
    cb.on_train_epoch_end(trainer, module)
    assert logged == {"perf/epoch_seconds": 15.0, "perf/train_images_per_s": 2.0}


def test_per_class_rows_avg_counts_images():
    summary = {"count_per_class": [3, 5], "std_per_class": [0.1, 0.2], "bndy_per_class": [0.3, 0.4],
               "rob_per_class": [0.4, 0.6], "std_avg": 0.15, "bndy_avg": 0.35, "rob_avg": 0.5,
               "std_worst": 0.2, "bndy_worst": 0.4, "rob_worst": 0.6}
    rows = per_class_rows(summary, ["a", "b"])
    assert rows == [["a", 3, 10.0, 30.0, 40.0], ["b", 5, 20.0, 40.0, 60.0], ["avg", 8, 15.0, 35.0, 50.0],
                    ["worst", None, 20.0, 40.0, 60.0]]
