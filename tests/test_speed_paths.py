"""The fast paths give the numbers of a straightforward implementation: multi-tensor AdamW without bias
correction, torch's fused AdamW, SDPA attention with the additive mask, fp32 argmax in the MLM metric."""
import math

import torch
import torch.nn.functional as F

from tencentpretrain.layers.attention import MultiHeadedAttention
from tencentpretrain.layers.masks import padding_mask
from tencentpretrain.targets.target import masked_lm_loss
from tencentpretrain.training.optim import AdamWNoBiasCorrection, build_optimizer, fused_supported


def _params_and_grads(steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]
    return start, grads


def _reference_no_bias_correction(start, grads, lr, wd, betas=(0.9, 0.999), eps=1e-6, skip=()):
    """BertAdam's update written out per parameter, the way the optimizer used to run it."""
    params = [p.clone() for p in start]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step_grads in grads:
        for i, (p, grad) in enumerate(zip(params, step_grads)):
            if i in skip:
                continue
            p.mul_(1 - lr * wd)
            m[i].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
            v[i].mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
            p.addcdiv_(m[i], v[i].sqrt().add_(eps), value=-lr)
    return params


def test_multi_tensor_adamw_without_bias_correction_is_bitwise_the_per_parameter_loop():
    start, grads = _params_and_grads(4)
    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = AdamWNoBiasCorrection([{"params": params[:2], "weight_decay": 0.1},
                                 {"params": params[2:], "weight_decay": 0.0}], lr=0.01)
    for step_grads in grads:
        for i, (p, g) in enumerate(zip(params, step_grads)):
            p.grad = None if i == 3 else g.clone()  # a parameter without gradient is left alone
        opt.step()
    ref_decay = _reference_no_bias_correction(start[:2], [g[:2] for g in grads], 0.01, 0.1)
    ref_plain = _reference_no_bias_correction(start[2:], [g[2:] for g in grads], 0.01, 0.0, skip=(1,))
    for got, want in zip(params, ref_decay + ref_plain):
        assert torch.equal(got.detach(), want)
    assert torch.equal(params[3].detach(), start[3])
    assert opt.state[params[0]]["step"].item() == 4 and params[3] not in opt.state


def test_fused_adamw_matches_torch_loop_adamw():
    start, grads = _params_and_grads(5, seed=1)
    fused = [torch.nn.Parameter(p.clone()) for p in start]
    loop = [torch.nn.Parameter(p.clone()) for p in start]
    opt = build_optimizer([{"params": fused, "weight_decay": 0.01}], lr=0.01, bias_correction=True)
    ref = torch.optim.AdamW([{"params": loop, "weight_decay": 0.01}], lr=0.01, eps=1e-6, foreach=False)
    assert opt.param_groups[0]["fused"] is True
    for step_grads in grads:
        for a, b, g in zip(fused, loop, step_grads):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for a, b, s in zip(fused, loop, start):
        assert not torch.equal(a.detach(), s)  # it moved, ~lr per step
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)


def test_fused_is_only_asked_for_floating_cpu_or_cuda_parameters():
    assert fused_supported([{"params": [torch.nn.Parameter(torch.zeros(2))]}])
    assert not fused_supported([{"params": []}])
    assert not fused_supported([{"params": [torch.nn.Parameter(torch.zeros(2, device="meta"))]}])


def _reference_attention(attn, x, mask):
    """Scores, additive mask, softmax, weighted sum: written out."""
    b, n, _ = x.shape
    q, k, v = (l(x).view(b, n, attn.heads_num, attn.head_size).transpose(1, 2) for l in attn.linear_layers)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_size)
    if mask is not None:
        scores = scores + mask
    out = (F.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, n, -1)
    return attn.final_linear(out)


def test_sdpa_attention_with_padding_mask_equals_the_written_out_formula():
    torch.manual_seed(0)
    attn = MultiHeadedAttention(hidden_size=32, heads_num=4, head_size=8, dropout=0.1).eval()
    x = torch.randn(3, 6, 32)
    seg = torch.tensor([[1, 1, 1, 2, 2, 2], [1, 1, 2, 2, 0, 0], [1, 1, 1, 0, 0, 0]])
    mask = padding_mask(seg)
    assert mask is not None and mask.shape == (3, 1, 6, 6)
    got = attn(x, x, x, mask)
    torch.testing.assert_close(got, _reference_attention(attn, x, mask), rtol=0, atol=1e-5)
    # In training mode the dropout on the attention weights draws from the seeded generator.
    attn.train()
    torch.manual_seed(3)
    first = attn(x, x, x, mask)
    torch.manual_seed(3)
    assert torch.equal(first, attn(x, x, x, mask))
    assert not torch.allclose(first, got)


def test_mlm_accuracy_from_bf16_logits_counts_the_bf16_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 50, generator=g).to(torch.bfloat16)
    logits[0, :] = 0  # a full tie: the first index wins in both dtypes
    gold = torch.randint(0, 50, (40,), generator=g)
    gold[:10] = logits[:10].argmax(-1)
    loss, metrics = masked_lm_loss(logits, gold, "mlm")
    assert loss.dtype == torch.float32
    want = int((logits.argmax(-1) == gold).sum())
    assert want >= 10 and int(metrics["mlm_acc"][0]) == want and metrics["mlm_acc"][1] == 40
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), gold))
