"""Gradient accumulation in the fine-tuning engine: N micro-batches of B rows are one batch of N*B rows.

Both runs shuffle with the same seed, so micro-batches 1..N of one optimizer step are exactly the rows
of the big batch; with dropout 0 the accumulated gradient (the mean of the micro-batch means) must
equal the big batch's mean gradient, and the weights after each step must agree, up to fp32 rounding.
Gradients are compared raw (clipping off), since Adam and clipping would hide a gradient off by a
constant factor, and weights with the default clipping on.
"""
import os

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks import engine
from tencentpretrain.tasks.classification import ClassificationTask
from tencentpretrain.tasks.heads import Classifier

CONFIG = os.path.join(repo_root(), "models", "bert", "tiny_config.json")
BUILD_OPTIMIZER = engine.build_optimizer


def _data(n=16, length=9):
    g = torch.Generator().manual_seed(5)
    src = torch.randint(5, 60, (n, length), generator=g)
    seg = torch.ones(n, length, dtype=torch.long)
    for i in range(n):  # rows of different lengths: micro-batches are trimmed to different widths
        src[i, 3 + i % 6:] = 0
        seg[i, 3 + i % 6:] = 0
    return {"src": src, "seg": seg, "label": torch.randint(0, 3, (n,), generator=g)}


def _fit(batch_size, accumulation_steps, max_grad_norm, monkeypatch):
    """Weights after 2 epochs, and the gradients the optimizer saw at each step."""
    torch.manual_seed(0)
    cfg = load_model_config(CONFIG, {"vocab_size": 60, "layers_num": 1, "dropout": 0.0})
    model = Classifier(cfg, 3)
    grads = []

    def recording(*args, **kwargs):
        opt = BUILD_OPTIMIZER(*args, **kwargs)
        opt.register_step_pre_hook(lambda o, a, k: grads.append(
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        return opt

    monkeypatch.setattr(engine, "build_optimizer", recording)
    run = engine.RunConfig(epochs_num=2, batch_size=batch_size, accumulation_steps=accumulation_steps,
                           learning_rate=1e-3, warmup=0.25, max_grad_norm=max_grad_norm, seed=3)
    engine.fit(model, ClassificationTask(), _data(), [], run, None, log=lambda msg: None)
    return {k: v.clone() for k, v in model.state_dict().items()}, grads


@pytest.mark.parametrize("micro, steps", [(2, 4), (4, 2)])
def test_accumulated_micro_batches_equal_one_big_batch(micro, steps, monkeypatch):
    big_weights, big_grads = _fit(micro * steps, 1, 0.0, monkeypatch)
    acc_weights, acc_grads = _fit(micro, steps, 0.0, monkeypatch)
    assert len(big_grads) == len(acc_grads) == 4  # 16 rows, 8 per step, 2 epochs
    for step, (a, b) in enumerate(zip(big_grads, acc_grads)):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6), (step, name)
    for name in big_weights:
        assert torch.allclose(big_weights[name], acc_weights[name], rtol=1e-4, atol=1e-6), name
    start = Classifier(load_model_config(CONFIG, {"vocab_size": 60, "layers_num": 1}), 3).state_dict()
    assert not torch.allclose(start["output_layer_2.weight"], big_weights["output_layer_2.weight"])


def test_accumulation_with_clipping_gives_the_big_batch_weights(monkeypatch):
    big_weights, _ = _fit(8, 1, 1.0, monkeypatch)
    acc_weights, _ = _fit(2, 4, 1.0, monkeypatch)
    for name in big_weights:
        assert torch.allclose(big_weights[name], acc_weights[name], rtol=1e-4, atol=1e-6), name
