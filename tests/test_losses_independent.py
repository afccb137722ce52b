"""Pre-training losses against torch's cross-entropy on logits computed outside the target modules.

The encoder's hidden states come from the model; each head's logits are recomputed here from its
weights with plain formulas (x @ W.T + b, erf GELU, TencentPretrain's LayerNorm written out, tanh
pooler), so a change inside a target (a scaled logit, a wrong position, a missing bias) shows up as
a different loss.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.config import load_model_config
from tencentpretrain.model_builder import build_model

TINY = dict(emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=1,
            max_seq_length=24, vocab_size=50, dropout=0.0)


def _batch():
    g = torch.Generator().manual_seed(3)
    src = torch.randint(5, 50, (3, 10), generator=g)
    seg = torch.ones(3, 10, dtype=torch.long)
    seg[0, 7:] = 0
    seg[1, 5:] = 2
    mlm = torch.full((3, 10), -100)
    mlm[0, 2], mlm[1, 4], mlm[1, 8], mlm[2, 0], mlm[2, 9] = 7, 11, 13, 17, 19
    lm = torch.roll(src, -1, 1)
    lm[0, 6:] = -100  # padding is not predicted
    return dict(src=src, seg=seg, tgt_mlm=mlm, tgt_sp=torch.tensor([1, 0, 1]), tgt_lm=lm,
                tgt_cls=torch.tensor([2, 0, 1]))


def _linear(x, layer):
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0.0)


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _layer_norm(x, ln):
    """TencentPretrain's convention: gamma * (x - mean) / (unbiased std + eps) + beta."""
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean) ** 2).sum(-1, keepdim=True).div(x.shape[-1] - 1).sqrt()
    return ln.gamma * (x - mean) / (std + ln.eps) + ln.beta


def _model(target, **extra):
    torch.manual_seed(0)
    return build_model(load_model_config(None, dict(TINY, target=target, **extra))).eval()


def _check(out, name, logits, gold):
    """The model's loss, and its `<name>_loss` / `<name>_acc` metrics, against F.cross_entropy."""
    expected = F.cross_entropy(logits, gold)
    n = gold.numel()
    assert torch.allclose(out.loss, expected, rtol=1e-6, atol=1e-6), (name, out.loss, expected)
    total, count = out.metrics[f"{name}_loss"]
    assert count == n and torch.allclose(total / n, expected, rtol=1e-6, atol=1e-6)
    correct, count = out.metrics[f"{name}_acc"]
    assert count == n and int(correct) == int((logits.argmax(-1) == gold).sum())


def test_mlm_loss_is_cross_entropy_of_the_masked_positions():
    model, batch = _model(["mlm"]), _batch()
    with torch.no_grad():
        out = model(batch)
        hidden = model.hidden(batch)
        keep = batch["tgt_mlm"] != -100
        head = model.target.mlm
        logits = _linear(_layer_norm(_gelu(_linear(hidden[keep], head.linear_1)), head.layer_norm), head.linear_2)
    assert keep.sum() == 5 and logits.shape == (5, 50)
    _check(out, "mlm", logits, batch["tgt_mlm"][keep])


def test_next_sentence_loss_is_cross_entropy_of_the_first_token():
    model, batch = _model(["sp"]), _batch()
    with torch.no_grad():
        out = model(batch)
        head = model.target.sp
        logits = _linear(torch.tanh(_linear(model.hidden(batch)[:, 0], head.linear_1)), head.linear_2)
    _check(out, "sp", logits, batch["tgt_sp"])


@pytest.mark.parametrize("bias", [False, True])
def test_lm_loss_is_cross_entropy_of_the_next_tokens(bias):
    model, batch = _model(["lm"], mask="causal", has_lmtarget_bias=bias), _batch()
    with torch.no_grad():
        out = model(batch)
        keep = batch["tgt_lm"] != -100
        logits = _linear(model.hidden(batch)[keep], model.target.lm.output_layer)
    assert keep.sum() == 26
    _check(out, "lm", logits, batch["tgt_lm"][keep])


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_cls_loss_is_cross_entropy_of_the_pooled_vector(pooling):
    model, batch = _model(["cls"], labels_num=3, pooling=pooling), _batch()
    with torch.no_grad():
        out = model(batch)
        hidden = model.hidden(batch)
        if pooling == "first":
            pooled = hidden[:, 0]
        else:  # the mean over the non-padding tokens, one sequence at a time
            pooled = torch.stack([h[s > 0].mean(0) for h, s in zip(hidden, batch["seg"])])
        head = model.target.cls
        logits = _linear(torch.tanh(_linear(pooled, head.linear_1)), head.linear_2)
    _check(out, "cls", logits, batch["tgt_cls"])


def test_mlm_and_sp_losses_add_up():
    model, batch = _model(["mlm", "sp"]), _batch()
    with torch.no_grad():
        out = model(batch)
        hidden = model.hidden(batch)
        keep = batch["tgt_mlm"] != -100
        mlm, sp = model.target.mlm, model.target.sp
        mlm_logits = _linear(_layer_norm(_gelu(_linear(hidden[keep], mlm.linear_1)), mlm.layer_norm), mlm.linear_2)
        sp_logits = _linear(torch.tanh(_linear(hidden[:, 0], sp.linear_1)), sp.linear_2)
    expected = F.cross_entropy(mlm_logits, batch["tgt_mlm"][keep]) + F.cross_entropy(sp_logits, batch["tgt_sp"])
    assert torch.allclose(out.loss, expected, rtol=1e-6, atol=1e-6)
