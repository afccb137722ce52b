"""The shared loop: best-on-dev selection, atomic saving, accumulation, trimming of padded columns."""
import os

import torch
import torch.nn as nn

from tencentpretrain.tasks.engine import RunConfig, batches, fit


class Scripted:
    """A task whose dev metric follows a script, so the best epoch is known in advance."""

    def __init__(self, scores):
        self.scores = list(scores)

    def loss(self, model, batch):
        return model(batch["src"], batch["seg"]).pow(2).mean()

    def evaluate(self, model, data, run):
        return {"acc": self.scores.pop(0), "epoch_weight": float(model.lin.weight.sum())}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, src, seg):
        return self.lin(src.float()[..., :1])


def _data(n=10):
    return {"src": torch.ones(n, 4, dtype=torch.long), "seg": torch.ones(n, 4, dtype=torch.long)}


def test_best_epoch_is_kept_and_saved(tmp_path):
    logs = []
    path = str(tmp_path / "best.bin")
    model = Tiny()
    result = fit(model, Scripted([0.5, 0.9, 0.7]), _data(), [("dev", None)],
                 RunConfig(epochs_num=3, batch_size=4, learning_rate=0.1, warmup=0.0, report_steps=1),
                 path, log=logs.append)
    assert result["best_epoch"] == 2 and result["best"]["acc"] == 0.9
    saved = torch.load(path, weights_only=True)
    assert float(saved["lin.weight"].sum()) == result["best"]["epoch_weight"]
    assert torch.equal(model.lin.weight, saved["lin.weight"])  # the model holds the best weights too
    assert not os.path.exists(path + ".tmp")
    assert sum("(best)" in line for line in logs) == 2  # epochs 1 and 2 improved
    assert logs[-1].startswith("done: 9 steps") and "best dev acc 0.9000 at epoch 2" in logs[-1]
    assert sum("examples/s" in line for line in logs) >= 9


def test_accumulation_counts_optimizer_steps():
    logs = []
    fit(Tiny(), Scripted([]), _data(10), [], RunConfig(epochs_num=2, batch_size=2, accumulation_steps=2,
                                                       report_steps=100), None, log=logs.append)
    # 5 batches per epoch -> 3 optimizer steps (the last one takes the odd batch), 6 in all
    assert "2 epochs x 3 steps of 4 examples" in logs[0] and logs[-1].startswith("done: 6 steps")


def test_batches_trim_padding_columns():
    data = {"src": torch.tensor([[5, 6, 0, 0], [5, 0, 0, 0], [5, 6, 7, 0]]),
            "seg": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 2, 2, 0]]), "label": torch.tensor([0, 1, 2])}
    first, second = batches(data, 2)
    assert first["src"].shape == (2, 2) and second["src"].shape == (1, 3)
    assert first["label"].tolist() == [0, 1]
    shuffled = [b["label"].tolist() for b in batches(data, 3, torch.Generator().manual_seed(0))]
    assert sorted(shuffled[0]) == [0, 1, 2]


def test_seeding_autocast_and_durations_are_the_pretraining_loops():
    """Both loops call utils.runtime: one seeding, one autocast, one duration format (two styles)."""
    import numpy as np
    from tencentpretrain.utils.runtime import format_duration, seed_everything
    seed_everything(5)
    first = (torch.rand(3), np.random.rand())
    seed_everything(5 + (1 << 32))  # NumPy takes the seed modulo 2**32, torch accepts it as is
    assert np.random.rand() == first[1]
    seed_everything(5)
    assert torch.equal(torch.rand(3), first[0])
    with RunConfig(bf16=True).autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with RunConfig().autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert [format_duration(s, compact=True) for s in (0, 65, 3725, -2)] == ["0m00s", "1m05s", "1h02m", "0m00s"]
    assert [format_duration(s) for s in (65, 3725, -2)] == ["0:01:05", "1:02:05", "0:00:00"]
