"""WID mask strategies as registered objects (tencentpretrain/wid/strategies): the built-in `dim` and
`head`, and a toy strategy registered by this file, run through WID training, the merge and magnitude
pruning without touching the library."""
import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights
from tencentpretrain.pruning import prune_state_dict
from tencentpretrain.wid.config import WidConfig, plan_geometry
from tencentpretrain.wid.groups import groups_of
from tencentpretrain.wid.merge import merge
from tencentpretrain.wid.strategies import MASK_STRATEGIES, get_strategy, strategy_names
from tencentpretrain.wid.strategies.base import MaskStrategy
from test_wid_helpers import batch, build_pair, logits, teacher_dict, train, wid_dict, zero_masked


class FrontHeads(MaskStrategy):
    """Toy: keep the first heads whole, ignoring the scores; an even number of heads; one stage."""

    def student_heads(self, hidden, heads, head_size, target, what="wid.target_hidden_size", where=None):
        self.require_multiple(target, 2 * head_size, hidden, f"keeps pairs of heads of {head_size}", what, where)
        return target // head_size, head_size

    def stages(self, heads, target_heads, wid):
        return 1

    def masked_units(self, group, fraction, geometry):
        return int((geometry.heads - geometry.target_heads) * fraction + 1e-9)

    def select(self, group, score, count):
        keep = torch.ones_like(group.keep)
        heads = group.size // group.unit
        keep.view(heads, group.unit)[heads - count:] = False
        return keep


@pytest.fixture
def front():
    MASK_STRATEGIES.register("front")(FrontHeads)
    yield "front"
    MASK_STRATEGIES._entries.pop("front")  # the registry has no unregister: keep other tests' choices intact


def test_builtin_strategies_declare_their_geometry_and_stage_plan():
    assert strategy_names() == ["dim", "head"]
    wid = WidConfig(target_hidden_size=192)
    dim, head = get_strategy("dim"), get_strategy("head")
    assert dim.heads_for(768, 12, 64, 192) == (12, 16) and dim.stages(12, 12, wid) == 8
    assert head.heads_for(768, 12, 64, 192) == (3, 64) and head.stages(12, 3, wid) == 9
    with pytest.raises(UserError, match="^x.json: strategy 'head' keeps whole heads of 64, so the width must be a "
                                        "multiple of 64; 100 is not. Nearest reachable: 64 or 128$"):
        head.heads_for(768, 12, 64, 100, what="the width", where="x.json")
    with pytest.raises(UserError, match="^wid.strategy: unknown mask strategy 'rows'; choose one of: dim, head$"):
        get_strategy("rows")


def test_a_registered_strategy_is_accepted_and_planned_by_the_config(front):
    assert strategy_names() == ["dim", "front", "head"]
    cfg = load_model_config(None, wid_dict(strategy=front))
    g = plan_geometry(cfg)
    assert (g.target_heads, g.target_head_size, g.attention_stages, g.schedule_steps) == (2, 12, 1, 4)
    with pytest.raises(UserError, match="strategy 'front' keeps pairs of heads of 12, so wid.target_hidden_size "
                                        "must be a multiple of 24; 36 is not. Nearest reachable: 24 or 48"):
        plan_geometry(load_model_config(None, wid_dict(strategy=front, target=36, target_ffn=64)))
    with pytest.raises(UserError, match="choose one of: dim, front, head"):
        WidConfig.from_dict({"target_hidden_size": 24, "strategy": "back"})


def test_a_registered_strategy_drives_the_schedule_and_merges_exactly(front):
    _, model = build_pair(wid_dict(strategy=front))
    cb, _ = train(model, 1)
    attention = [g for g in groups_of(model) if g.kind == "attention"]
    for g in attention:  # one stage: the last two heads go at the first update, whatever the scores
        assert g.keep.view(4, 12).sum(1).tolist() == [12, 12, 0, 0]
    assert groups_of(model)[2].n_kept == 136  # the FFN keeps its own plan: 160 -> 64 in 4 updates
    train(model, 3, callback=cb, start=2)
    assert cb.finished()
    zero_masked(model)
    sd, cfg = merge(model)
    assert (cfg["hidden_size"], cfg["heads_num"], cfg["feedforward_size"]) == (24, 2, 64)
    student = build_model(load_model_config(None, cfg)).eval()
    load_model_weights(student, sd)
    b = batch(seed=7)
    assert torch.allclose(logits(student, b), logits(model, b), atol=1e-5, rtol=0)


def test_magnitude_pruning_uses_the_same_strategy_objects(front):
    teacher, _ = build_pair(wid_dict())
    cfg = load_model_config(None, teacher_dict(wid_dict()))
    result = prune_state_dict(teacher.state_dict(), cfg, hidden_size=24, feedforward_size=64, strategy=front)
    assert result.kept["A.0"].tolist() == list(range(24)) and result.config["heads_num"] == 2
    assert result.state_dict["encoder.transformer.1.self_attn.linear_layers.2.weight"].shape == (24, 24)
    student = build_model(load_model_config(None, result.config))
    load_model_weights(student, result.state_dict)
    with pytest.raises(UserError, match="strategy 'front' keeps pairs of heads of 12, so the hidden size must be a "
                                        "multiple of 24; 12 is not"):
        prune_state_dict(teacher.state_dict(), cfg, hidden_size=12, strategy=front)
    with pytest.raises(UserError, match="unknown mask strategy 'back'; choose one of: dim, front, head"):
        prune_state_dict(teacher.state_dict(), cfg, hidden_size=24, strategy="back")


def test_pruned_model_matches_the_wid_merge_of_the_same_masks():
    """One group model: a WID model given the pruning's masks merges to the pruned weights, attention
    scale included (dim: sqrt(6 / 12) folded into W_q in both)."""
    teacher, model = build_pair(wid_dict(hidden=48, heads=4, ffn=160, target=24, target_ffn=64))
    cfg = load_model_config(None, teacher_dict(wid_dict()))
    result = prune_state_dict(teacher.state_dict(), cfg, hidden_size=24, feedforward_size=64)
    for g in groups_of(model):
        keep = torch.zeros(g.size, dtype=torch.bool)
        keep[result.kept["S" if g.name == "M" else g.name]] = True  # tied decoder: M keeps S
        g.keep.copy_(keep)
        g.refresh()
    sd, _ = merge(model)
    assert set(result.state_dict) - set(sd) == set()
    for key, value in result.state_dict.items():
        if "linear_layers.0." in key:  # W_q, b_q: scaled in float64 by the merge, in the checkpoint's dtype here
            assert torch.allclose(sd[key], value, atol=0, rtol=1e-6), key
        else:
            assert torch.equal(sd[key], value), key


def test_merge_refuses_heads_the_student_cannot_hold():
    _, model = build_pair(wid_dict())
    cb, _ = train(model, 4)
    a = groups_of(model)[1]
    keep = a.keep.clone()
    head0, head1 = keep.view(4, 12)[0], keep.view(4, 12)[1]
    i, j = int(head0.nonzero()[0]), int((~head1).nonzero()[0])
    head0[i], head1[j] = False, True  # one dim moved from head 0 to head 1: 5 and 7 kept
    a.keep.copy_(keep)
    a.refresh()
    zero_masked(model)
    with pytest.raises(UserError, match=r"group A.0: kept dims per head \[5, 7, 6, 6\] do not form 4 heads of 6"):
        merge(model)
