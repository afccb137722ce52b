import json
import os
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, save_state_dict
from tencentpretrain.wid.merge import merge
from test_wid_helpers import batch, build_pair, logits, train, wid_dict, zero_masked

GEOMETRIES = [  # hidden, heads, ffn, target, target ffn, strategy, layernorm
    (48, 4, 160, 24, 64, "dim", "normal"),        # 4 heads of 12 -> 4 of 6
    (64, 2, 96, 32, 40, "dim", "normal"),         # 2 heads of 32 -> 2 of 16, FFN not 4H
    (64, 2, 96, 32, 40, "head", "normal"),        # -> 1 head of 32
    (48, 4, 100, 24, 30, "head", "normal_torch"),  # -> 2 heads of 12
]


def compress(hidden, heads, ffn, target, target_ffn, strategy, layernorm):
    d = wid_dict(hidden=hidden, heads=heads, ffn=ffn, target=target, target_ffn=target_ffn, strategy=strategy)
    d["layernorm"] = layernorm
    _, model = build_pair(d)
    with torch.no_grad():  # peaked attention, so a wrong score scale would show in the logits
        for layer in model.encoder.transformer:
            for lin in layer.self_attn.linear_layers[:2]:
                lin.weight.mul_(15.0)
    cb, _ = train(model, cb_steps(model))
    assert cb.finished()
    zero_masked(model)
    return model


def cb_steps(model):
    from tencentpretrain.wid.config import plan_geometry
    return plan_geometry(model.cfg).schedule_steps + 1


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}-{g[3]}-{g[5]}")
def test_merged_student_matches_compacted_model(geometry):
    hidden, heads, ffn, target, target_ffn, strategy, _ = geometry
    model = compress(*geometry)
    sd, cfg = merge(model)
    assert (cfg["hidden_size"], cfg["feedforward_size"], cfg["encoder"], cfg["target"], cfg["tie_weights"]) == \
        (target, target_ffn, "transformer", ["mlm"], False)
    assert cfg["heads_num"] == (heads if strategy == "dim" else target // (hidden // heads))
    student = build_model(load_model_config(None, cfg)).eval()
    load_model_weights(student, sd)  # every key, standard names, right shapes
    b = batch(seed=11)
    assert torch.allclose(logits(student, b), logits(model, b), atol=1e-5, rtol=0)


def test_dim_merge_needs_the_attention_scale_fix():
    model = compress(*GEOMETRIES[0])
    sd, cfg = merge(model)
    for i in range(cfg["layers_num"]):  # undo it: the student is then measurably off
        for k in ("weight", "bias"):
            sd[f"encoder.transformer.{i}.self_attn.linear_layers.0.{k}"] /= (6 / 12) ** 0.5
    student = build_model(load_model_config(None, cfg)).eval()
    load_model_weights(student, sd)
    b = batch(seed=11)
    assert (logits(student, b) - logits(model, b)).abs().max() > 1e-4


def test_merge_refuses_an_unfinished_schedule():
    _, model = build_pair(wid_dict())
    train(model, 2)
    with pytest.raises(UserError, match="have not reached the target widths: F.0 keeps 112 of 160 \\(target 64\\).*"
                                        "M keeps 36 of 48.*schedule needs 4 optimizer steps"):
        merge(model)


def test_merge_script_writes_a_student_the_ordinary_path_loads(tmp_path, repo_root):
    model = compress(*GEOMETRIES[1])
    ckpt, config = tmp_path / "wid.bin", tmp_path / "wid_config.json"
    save_state_dict(model.state_dict(), str(ckpt))
    with open(config, "w") as f:
        json.dump(model.cfg.to_dict(), f)
    out = tmp_path / "student.bin"
    run = subprocess.run([sys.executable, os.path.join(repo_root, "scripts", "merge_compactors.py"),
                          "--load_model_path", str(ckpt), "--config_path", str(config),
                          "--output_model_path", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "student: hidden 32, 2 heads, FFN 40" in run.stdout
    student = build_model(load_model_config(str(tmp_path / "student_config.json"))).eval()
    load_model_weights(student, str(out))
    b = batch(seed=3)
    assert torch.allclose(logits(student, b), logits(model, b), atol=1e-5, rtol=0)
    bad = subprocess.run([sys.executable, os.path.join(repo_root, "scripts", "merge_compactors.py"),
                          "--load_model_path", str(out), "--config_path", str(config),
                          "--output_model_path", str(tmp_path / "x.bin")], capture_output=True, text=True)
    assert bad.returncode == 2 and "error:" in bad.stderr and "does not fit the model config" in bad.stderr
