"""One-shot magnitude pruning (tencentpretrain/pruning.py, scripts/prune_by_magnitude.py)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file, save_state_dict
from tencentpretrain.pruning import prune_state_dict

TINY = {"emb_size": 16, "hidden_size": 16, "feedforward_size": 40, "heads_num": 4, "layers_num": 2,
        "max_seq_length": 12, "vocab_size": 30, "target": ["mlm"], "tie_weights": True, "dropout": 0.0,
        "layernorm": "normal_torch", "data_processor": "mlm"}


def tiny_teacher(**over):
    torch.manual_seed(0)
    cfg = load_model_config(None, {**TINY, **over})
    return cfg, build_model(cfg)


def batch(vocab=30, b=3, length=10):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(5, vocab, (b, length), generator=g)
    tgt = torch.full_like(src, -100)
    tgt[:, 2] = src[:, 2]
    return {"src": src, "seg": torch.ones_like(src), "tgt_mlm": tgt}


def test_shapes_and_the_pruned_model_loads_and_runs():
    cfg, model = tiny_teacher()
    result = prune_state_dict(model.state_dict(), cfg, hidden_size=8, feedforward_size=20)
    sd = result.state_dict
    assert sd["embedding.word.embedding.weight"].shape == (30, 8)
    assert sd["embedding.pos.embedding.weight"].shape == (12, 8)
    assert sd["embedding.seg.embedding.weight"].shape == (3, 8)
    assert sd["embedding.layer_norm.gamma"].shape == (8,)
    for i in range(2):
        p = f"encoder.transformer.{i}."
        for j in range(3):
            assert sd[p + f"self_attn.linear_layers.{j}.weight"].shape == (8, 8)  # 4 heads x 2
            assert sd[p + f"self_attn.linear_layers.{j}.bias"].shape == (8,)
        assert sd[p + "self_attn.final_linear.weight"].shape == (8, 8)
        assert sd[p + "feed_forward.linear_1.weight"].shape == (20, 8)
        assert sd[p + "feed_forward.linear_1.bias"].shape == (20,)
        assert sd[p + "feed_forward.linear_2.weight"].shape == (8, 20)
        assert sd[p + "layer_norm_2.beta"].shape == (8,)
    assert sd["target.mlm.linear_1.weight"].shape == (8, 8)
    assert sd["target.mlm.linear_2.weight"].shape == (30, 8)
    assert sd["target.mlm.linear_2.bias"].shape == (30,)
    assert result.config["heads_num"] == 4 and result.config["hidden_size"] == 8
    assert result.config["feedforward_size"] == 20
    student = build_model(load_model_config(None, result.config))
    report = load_model_weights(student, sd)  # strict: every key present, every shape right
    assert not report.missing and not report.unexpected
    out = student(batch())
    assert torch.isfinite(out.loss) and out.metrics["mlm_acc"][1] == 3


def test_keeps_the_largest_norm_dims_consistently():
    cfg, model = tiny_teacher()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    stream = [1, 4, 6, 9, 10, 11, 13, 15]
    for key, w in sd.items():  # boost the chosen stream coordinates wherever the stream appears
        if w.dim() != 2:
            continue
        if key.endswith(("final_linear.weight", "linear_2.weight")) and "target" not in key:
            w[stream] *= 10  # written to the stream: rows
        else:
            w[:, stream] *= 10  # read from the stream (and embedding tables): columns
    ffn = [0, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 38, 39, 2, 8, 9, 21, 22, 30]
    sd["encoder.transformer.0.feed_forward.linear_1.weight"][ffn] *= 10
    sd["encoder.transformer.0.feed_forward.linear_2.weight"][:, ffn] *= 10
    head_dims = [1, 2]  # in every head of layer 1: these two of its 4 dims
    for j in range(3):
        w = sd[f"encoder.transformer.1.self_attn.linear_layers.{j}.weight"].view(4, 4, -1)
        w[:, head_dims] *= 10
    result = prune_state_dict(sd, cfg, hidden_size=8, feedforward_size=20)
    assert result.kept["S"].tolist() == stream
    assert result.kept["M"].tolist() == stream  # tied decoder: the head keeps the stream's coordinates
    assert result.kept["F.0"].tolist() == sorted(ffn)
    assert result.kept["A.1"].tolist() == [h * 4 + d for h in range(4) for d in head_dims]
    # the kept slices are the teacher's entries, in order
    torch.testing.assert_close(result.state_dict["embedding.word.embedding.weight"],
                               sd["embedding.word.embedding.weight"][:, stream])
    torch.testing.assert_close(result.state_dict["encoder.transformer.0.feed_forward.linear_2.weight"],
                               sd["encoder.transformer.0.feed_forward.linear_2.weight"][stream][:, sorted(ffn)])


def test_dim_strategy_folds_the_score_scale_into_the_query():
    cfg, model = tiny_teacher()
    sd = model.state_dict()
    result = prune_state_dict(sd, cfg, hidden_size=8, feedforward_size=20)
    a, s = result.kept["A.0"], result.kept["S"]
    q = "encoder.transformer.0.self_attn.linear_layers.0."
    k = "encoder.transformer.0.self_attn.linear_layers.1."
    torch.testing.assert_close(result.state_dict[q + "weight"], sd[q + "weight"][a][:, s] * math.sqrt(2 / 4))
    torch.testing.assert_close(result.state_dict[k + "weight"], sd[k + "weight"][a][:, s])  # keys unscaled
    torch.testing.assert_close(result.state_dict[q + "bias"], sd[q + "bias"][a] * math.sqrt(2 / 4))


def test_head_strategy_keeps_whole_strongest_heads():
    cfg, model = tiny_teacher()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for j in range(3):
        sd[f"encoder.transformer.0.self_attn.linear_layers.{j}.weight"].view(4, 4, -1)[[0, 3]] *= 10
    result = prune_state_dict(sd, cfg, hidden_size=8, feedforward_size=20, strategy="head")
    assert result.kept["A.0"].tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert result.config["heads_num"] == 2
    student = build_model(load_model_config(None, result.config))
    load_model_weights(student, result.state_dict)
    assert torch.isfinite(student(batch()).loss)


def test_unreachable_widths_and_unknown_keys_are_errors():
    cfg, model = tiny_teacher()
    with pytest.raises(UserError, match="multiple of 4; 6 is not"):
        prune_state_dict(model.state_dict(), cfg, hidden_size=6)
    with pytest.raises(UserError, match="between 1 and"):
        prune_state_dict(model.state_dict(), cfg, hidden_size=32)
    sd = {**model.state_dict(), "output_layer_2.weight": torch.zeros(2, 16)}
    with pytest.raises(UserError, match="cannot prune keys.*output_layer_2.weight"):
        prune_state_dict(sd, cfg, hidden_size=8)


def test_cli_writes_weights_and_config(tmp_path, repo_root):
    cfg, model = tiny_teacher(target=["mlm", "sp"])
    save_state_dict(model.state_dict(), str(tmp_path / "teacher.bin"))
    cfg.save(str(tmp_path / "teacher_config.json"))
    out = subprocess.run([sys.executable, os.path.join(repo_root, "scripts", "prune_by_magnitude.py"),
                          "--load_model_path", str(tmp_path / "teacher.bin"),
                          "--config_path", str(tmp_path / "teacher_config.json"),
                          "--output_model_path", str(tmp_path / "pruned.bin"), "--target_dim", "8"],
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "pruned: hidden 8, 4 heads, FFN 20, 2 layers" in out.stdout
    assert "target.sp.linear_1.weight" in out.stdout  # the next-sentence head is reported as left out
    config = json.loads((tmp_path / "pruned_config.json").read_text())
    assert config["target"] == ["mlm"] and config["feedforward_size"] == 20
    sd = load_state_dict_file(str(tmp_path / "pruned.bin"))
    assert sd["encoder.transformer.1.feed_forward.linear_1.weight"].shape == (20, 8)
    bad = subprocess.run([sys.executable, os.path.join(repo_root, "scripts", "prune_by_magnitude.py"),
                          "--load_model_path", str(tmp_path / "teacher.bin"),
                          "--config_path", str(tmp_path / "teacher_config.json"),
                          "--output_model_path", str(tmp_path / "bad.bin"), "--target_dim", "7"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "error: strategy 'dim' keeps all 4 heads" in bad.stderr
