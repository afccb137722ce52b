import argparse
import glob
import os

import pytest

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.resources import models_dir
from tencentpretrain.wid import WidConfig, apply_wid_overrides, plan_geometry, wid_opts


def base(name):
    return load_model_config(os.path.join(models_dir(), "wid", name), {"vocab_size": 30522})


def test_unknown_key_is_named():
    with pytest.raises(UserError, match="wid.target_hiden_size.*did you mean 'target_hidden_size'"):
        WidConfig.from_dict({"target_hiden_size": 384}, where="x.json")
    with pytest.raises(UserError, match="needs 'target_hidden_size'"):
        WidConfig.from_dict({"strategy": "dim"})
    with pytest.raises(UserError, match="wid.strategy.*choose one of: dim, head"):
        WidConfig.from_dict({"target_hidden_size": 384, "strategy": "rows"})
    assert WidConfig.from_dict({"target_dim": 384, "compactor_mask_strategy": "head"}).strategy == "head"


@pytest.mark.parametrize("name,hidden,heads,head_size,ffn", [
    ("bert_base_to_516_dim.json", 516, 12, 43, 2064), ("bert_base_to_384_dim.json", 384, 12, 32, 1536),
    ("bert_base_to_192_dim.json", 192, 12, 16, 768), ("bert_base_to_120_dim.json", 120, 12, 10, 480),
    ("bert_base_to_384_head.json", 384, 6, 64, 1536), ("bert_base_to_192_head.json", 192, 3, 64, 768)])
def test_shipped_configs_reach_their_targets(name, hidden, heads, head_size, ffn):
    g = plan_geometry(base(name))
    assert (g.target_hidden, g.target_heads, g.target_head_size, g.target_ffn) == (hidden, heads, head_size, ffn)
    # 16 FFN stages of w_step 1000; head: one head per 2 updates (192: 9 heads dropped, 18 updates)
    assert g.schedule_steps == {"192_head": 18000}.get(name[13:-5], 16000)


def test_every_shipped_wid_config_loads():
    paths = glob.glob(os.path.join(models_dir(), "wid", "*.json"))
    assert len(paths) >= 8
    for path in paths:
        plan_geometry(load_model_config(path, {"vocab_size": 100}))


def test_unreachable_targets_name_the_nearest():
    cfg = base("bert_base_to_384_dim.json")
    with pytest.raises(UserError, match="multiple of 12; 128 is not. Nearest reachable: 120 or 132"):
        plan_geometry(cfg, WidConfig(target_hidden_size=128))
    with pytest.raises(UserError, match="multiple of 64; 100 is not. Nearest reachable: 64 or 128"):
        plan_geometry(cfg, WidConfig(target_hidden_size=100, strategy="head"))
    with pytest.raises(UserError, match="between 1 and the teacher's hidden size 768"):
        plan_geometry(cfg, WidConfig(target_hidden_size=780))
    cfg.feedforward_size = 3070  # an FFN that does not scale to an integer
    with pytest.raises(UserError, match="FFN target 3070 \\* 516 / 768 is not an integer; set "
                                        "wid.target_feedforward_size \\(e.g. 2063\\)"):
        plan_geometry(cfg, WidConfig(target_hidden_size=516))


def test_cli_overrides():
    parser = argparse.ArgumentParser()
    wid_opts(parser)
    cfg = base("bert_base_to_192_dim.json")
    args = parser.parse_args(["--target_dim", "384", "--compactor_mask_strategy", "head", "--w_step", "50",
                              "--l2_lambda", "5", "--compactor_learning_rate", "1e-4", "--mask_path", "m.jsonl"])
    apply_wid_overrides(cfg, args)
    w = cfg.wid
    assert (w.target_hidden_size, w.strategy, w.w_step, w.l2_lambda, w.compactor_learning_rate, w.mask_path) == \
        (384, "head", 50, 5.0, 1e-4, "m.jsonl")
    assert plan_geometry(cfg).target_ffn == 1536  # re-derived from the new width
    with pytest.raises(UserError, match="command line.*Nearest reachable: 120 or 132"):
        apply_wid_overrides(cfg, parser.parse_args(["--target_dim", "128", "--compactor_mask_strategy", "dim"]))
    plain = load_model_config(os.path.join(models_dir(), "bert", "base_config.json"), {"vocab_size": 10})
    with pytest.raises(UserError, match="--w_step turn WID on, which needs --target_dim .*e.g. --target_dim 384"):
        apply_wid_overrides(plain, parser.parse_args(["--w_step", "5"]))
    assert plain.wid is None and plain.encoder == "transformer"
    apply_wid_overrides(plain, parser.parse_args([]))  # no flag: nothing to do


def test_wid_block_needs_wid_components():
    cfg = base("bert_base_to_384_dim.json")
    cfg.target = ["wid_mlm", "sp"]
    with pytest.raises(UserError, match="needs \"target\": \\[\"wid_mlm\"\\]"):
        plan_geometry(cfg)
