import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.wid import load_teacher
from tencentpretrain.wid.compactor import CompactedLinear
from tencentpretrain.wid.groups import groups_of
from tencentpretrain.wid.layer_norm import MaskedLayerNorm
from tencentpretrain.wid.model import teacher_allowances
from test_wid_helpers import batch, build_pair, logits, train, wid_dict, zero_masked


def set_fold(model, fold):
    for m in model.modules():
        if isinstance(m, CompactedLinear):
            m.fold = fold


@pytest.mark.parametrize("fold", ["weights", "activations"])
@pytest.mark.parametrize("layernorm", ["normal", "normal_torch"])
def test_step0_equals_teacher(fold, layernorm):
    d = wid_dict()
    d["layernorm"] = layernorm
    teacher, model = build_pair(d)
    set_fold(model.eval(), fold)
    b = batch()
    assert torch.allclose(logits(teacher, b), logits(model, b), atol=1e-6, rtol=0)
    assert abs(teacher.target.mlm(model.encode(b["src"], b["seg"]), b)[0].item() - model(b).loss.item()) < 1e-6


def test_teacher_keys_load_and_only_wid_keys_may_be_missing():
    teacher, model = build_pair(wid_dict())
    missing, unexpected = teacher_allowances(model)
    assert all("compactor" in k or "wid_mask." in k for k in missing)
    assert "encoder.transformer.1.self_attn.linear_layers.0.compactor_out" in missing
    assert "embedding.wid_mask.keep" in missing and "target.mlm.wid_mask.keep" in missing
    # compactors are the identity even though build_model drew every weight from N(0, 0.02)
    assert torch.equal(model.encoder.transformer[0].feed_forward.linear_1.compactor_out, torch.eye(160))
    sd = teacher.state_dict()
    sd["encoder.transformer.0.self_attn.linear_layers.0.w"] = sd.pop(
        "encoder.transformer.0.self_attn.linear_layers.0.weight")  # a renamed teacher must not load silently
    with pytest.raises(UserError, match="missing from the checkpoint: encoder.transformer.0.self_attn."
                                        "linear_layers.0.weight"):
        load_teacher(model, sd)


def test_groups_follow_the_structure():
    _, model = build_pair(wid_dict(hidden=48, heads=4, ffn=100, layers=3, target=24, target_ffn=30))
    groups = {g.name: g for g in groups_of(model)}
    assert list(groups) == ["S", "A.0", "F.0", "A.1", "F.1", "A.2", "F.2", "M"]
    s, a, f, m = groups["S"], groups["A.1"], groups["F.1"], groups["M"]
    assert (s.size, s.target, a.unit, f.size, f.target, m.size) == (48, 24, 12, 100, 30, 48)
    # S: C_emb + emb LN(2) + per layer (Q,K,V in; out R; FFN1 in; FFN2 R; LN1, LN2 x2) + MLM linear_1 in
    assert len(s.members) == 1 + 2 + 3 * (3 + 1 + 1 + 1 + 4) + 1
    assert len(a.members) == 4 and len(f.members) == 2 and len(m.members) == 1 + 2 + 1
    assert "encoder.transformer.2.feed_forward.wid_mask.keep" in model.state_dict()


def test_fold_and_activation_forms_agree_with_masks():
    _, model = build_pair(wid_dict())
    train(model, 3)  # masks partly grown, compactors moved
    zero_masked(model)  # some coordinates dead: both forms skip them
    assert any(not g.all_alive for g in groups_of(model))
    b = batch(seed=5)
    set_fold(model, "weights")
    folded = logits(model, b)
    set_fold(model, "activations")
    applied = logits(model, b)
    assert torch.allclose(folded, applied, atol=1e-5, rtol=0)
    set_fold(model, "auto")
    layer = model.encoder.transformer[0].feed_forward.linear_1
    assert layer.use_fold(10_000) and not layer.use_fold(4)  # many tokens: fold; few: activations


def test_fold_runs_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    layer = CompactedLinear(8, 8)
    with torch.no_grad():
        layer.compactor_in.add_(1e-4 * torch.eye(8))  # an update bf16 cannot hold next to 1.0
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w, _ = layer.folded()
        y = layer(x, fold=False)
    assert w.dtype == torch.float32
    assert torch.allclose(w, layer.weight * (1 + 1e-4), atol=1e-8)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), layer(x), atol=0.05)


@pytest.mark.parametrize("kind", ["normal", "normal_torch"])
def test_masked_layer_norm_uses_kept_coordinates_only(kind):
    from tencentpretrain.layers.layer_norm import build_layernorm
    from tencentpretrain.wid.groups import MaskGroup
    torch.manual_seed(0)
    norm = MaskedLayerNorm(10, kind, 1e-6)
    group = MaskGroup("S", "stream", 10, 6)
    norm.group = (group,)
    with torch.no_grad():
        norm.gamma.uniform_(0.5, 1.5)
        norm.beta.uniform_(-1, 1)
    x = torch.randn(2, 5, 10)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 1, 0], dtype=torch.bool)
    group.keep.copy_(keep)
    group.refresh()
    small = build_layernorm(kind, 6, 1e-6)
    with torch.no_grad():
        small.gamma.copy_(norm.gamma[keep])
        small.beta.copy_(norm.beta[keep])
    assert torch.allclose(norm(x)[..., keep], small(x[..., keep]), atol=1e-6)


@pytest.mark.parametrize("kind", ["normal", "normal_torch"])
def test_masked_layer_norm_statistics_are_fp32_under_bf16_autocast(kind):
    """A bf16 input under autocast: the masked statistics are taken in fp32 (exactly the fp32 result, rounded
    once at most) and the output has the dtype the unmasked branch (the merged student's LayerNorm) gives."""
    from tencentpretrain.wid.groups import MaskGroup
    torch.manual_seed(0)
    norm = MaskedLayerNorm(384, kind, 1e-6)
    group = MaskGroup("S", "stream", 384, 192)
    norm.group = (group,)
    keep = torch.ones(384, dtype=torch.bool)
    keep[::7] = False
    group.keep.copy_(keep)
    group.refresh()
    x = torch.randn(4, 16, 384) * 3 + 1
    x[..., 5] *= 20  # an outlier coordinate, as trained BERTs have
    x = x.bfloat16()
    exact = norm(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = norm(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        group.keep.fill_(True)
        group.refresh()
        unmasked_dtype = norm(x).dtype
    assert exact.dtype == torch.float32 and got.dtype == unmasked_dtype
    assert got.dtype == (torch.bfloat16 if kind == "normal_torch" else torch.float32)
    assert torch.equal(got, exact.to(got.dtype))


def test_wid_encoder_needs_a_wid_block():
    d = wid_dict()
    d.pop("wid")
    with pytest.raises(UserError, match="wid_transformer.*needs a 'wid' block"):
        build_model(load_model_config(None, d))
