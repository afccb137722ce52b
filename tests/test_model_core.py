import json
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, save_state_dict
from tencentpretrain.opts import model_config_from_args, model_opts, parse_args

TINY = dict(emb_size=32, hidden_size=32, feedforward_size=64, heads_num=4, layers_num=2,
            max_seq_length=24, vocab_size=50, dropout=0.0)


def batch(b=3, length=12, vocab=50, pad_last=4):
    g = torch.Generator().manual_seed(0)
    src = torch.randint(5, vocab, (b, length), generator=g)
    seg = torch.ones(b, length, dtype=torch.long)
    seg[0, length - pad_last:] = 0
    tgt = torch.full((b, length), -100)
    tgt[:, 2] = src[:, 2]
    if b > 1:
        seg[1, length // 2:] = 2
        tgt[1, 5] = 7
    return dict(src=src, seg=seg, tgt_mlm=tgt, tgt_sp=torch.tensor([0, 1, 0][:b]),
                tgt_lm=torch.roll(src, -1, 1))


def test_bert_keys_follow_tencentpretrain_naming():
    model = build_model(load_model_config(None, TINY))
    keys = set(model.state_dict())
    for key in ("embedding.word.embedding.weight", "embedding.pos.embedding.weight",
                "embedding.seg.embedding.weight", "embedding.layer_norm.gamma",
                "encoder.transformer.1.self_attn.linear_layers.2.weight",
                "encoder.transformer.0.self_attn.final_linear.bias",
                "encoder.transformer.0.layer_norm_1.gamma", "encoder.transformer.0.feed_forward.linear_1.weight",
                "encoder.transformer.0.layer_norm_2.beta", "target.mlm.linear_1.weight",
                "target.mlm.layer_norm.gamma", "target.mlm.linear_2.bias", "target.sp.linear_2.weight"):
        assert key in keys, key
    assert model.state_dict()["embedding.seg.embedding.weight"].shape == (3, 32)


def test_mlm_sp_forward_losses_and_metrics():
    cfg = load_model_config(None, TINY)
    model = build_model(cfg).eval()
    out = model(batch())
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.metrics["mlm_acc"][1] == 4  # 3 positions in column 2 + one extra
    assert out.metrics["sp_acc"][1] == 3
    # the two losses add up to the total
    total = out.metrics["mlm_loss"][0] / 4 + out.metrics["sp_loss"][0] / 3
    assert torch.allclose(out.loss, total, atol=1e-5)


def test_padding_does_not_change_unpadded_outputs():
    model = build_model(load_model_config(None, TINY)).eval()
    b = batch(b=1, pad_last=0)
    short = model.encode(b["src"][:, :8], b["seg"][:, :8])
    padded_src = b["src"].clone()
    seg = b["seg"].clone()
    seg[:, 8:] = 0
    full = model.encode(padded_src, seg)
    assert torch.allclose(short, full[:, :8], atol=1e-5)


def test_tie_weights_shares_the_word_table():
    model = build_model(load_model_config(None, dict(TINY, tie_weights=True)))
    assert model.target.mlm.linear_2.weight is model.embedding.word.embedding.weight
    model = build_model(load_model_config(None, dict(TINY, tie_weights=False)))
    assert model.target.mlm.linear_2.weight is not model.embedding.word.embedding.weight


@pytest.mark.parametrize("positioning", ["post", "pre"])
@pytest.mark.parametrize("act", ["gelu", "gelu_fast", "relu"])
def test_gpt_style_causal_lm_does_not_see_the_future(positioning, act):
    cfg = load_model_config(None, dict(TINY, mask="causal", layernorm_positioning=positioning,
                                       hidden_act=act, target=["lm"], embedding=["word", "pos"],
                                       remove_embedding_layernorm=True, tie_weights=True))
    model = build_model(cfg).eval()
    b = batch(pad_last=0)
    h1 = model.encode(b["src"], b["seg"])
    src2 = b["src"].clone()
    src2[:, 6:] = 3  # change the future
    h2 = model.encode(src2, b["seg"])
    assert torch.allclose(h1[:, :6], h2[:, :6], atol=1e-5)
    assert not torch.allclose(h1[:, 6:], h2[:, 6:])
    assert "encoder.layer_norm.gamma" in model.state_dict() if positioning == "pre" else True
    assert torch.isfinite(model(b).loss)


def test_encoder_decoder_config_builds_and_trains(repo_root):
    cfg = load_model_config(f"{repo_root}/models/transformer/tiny_encoder_decoder_config.json",
                            {"vocab_size": 40, "dropout": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.tgt_embedding.word.embedding.weight is model.embedding.word.embedding.weight
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 40, (8, 10), generator=g)
    b = dict(src=src, seg=torch.ones_like(src), tgt_in=torch.cat([torch.full((8, 1), 2), src[:, :-1]], 1),
             tgt_out=src, tgt_seg=torch.ones_like(src))  # learn to copy the source
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(b).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert any(k.startswith("decoder.transformer_decoder.0.context_attn.") for k in model.state_dict())


def test_config_precedence_defaults_file_cli(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hidden_size": 64, "heads_num": 4, "dropout": 0.2}))
    import argparse
    parser = argparse.ArgumentParser()
    model_opts(parser)
    args = parse_args(parser, ["--config_path", str(path), "--dropout", "0.3"])
    cfg = model_config_from_args(args)
    assert cfg.hidden_size == 64          # from the file
    assert cfg.dropout == 0.3             # the CLI beats the file
    assert cfg.layers_num == 12           # the default survives
    assert "dropout" in vars(args) and "hidden_size" not in vars(args)  # untyped model flags are absent


@pytest.mark.parametrize("content, message", [
    ({"hiden_size": 64}, "unknown key 'hiden_size' (did you mean 'hidden_size'?)"),
    ({"hidden_size": "big"}, "key 'hidden_size' must be an integer"),
    ({"hidden_act": "swish2"}, "key 'hidden_act' is 'swish2'; choose one of"),
    ({"encoder": "lstm9"}, "key 'encoder' is 'lstm9'; choose one of"),
    ({"hidden_size": 100, "heads_num": 12}, "not divisible by heads_num"),
    ({"dropout": 1.5}, "key 'dropout' must be in [0, 1)"),
    ({"target": []}, "key 'target' must name at least one target"),
])
def test_config_errors_name_the_key(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError) as err:
        load_model_config(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_malformed_and_missing_config_files(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"hidden_size": 64,\n "heads_num": }')
    with pytest.raises(UserError, match=r"malformed JSON at line 2"):
        load_model_config(str(path))
    with pytest.raises(UserError, match="config file not found"):
        load_model_config(str(tmp_path / "nope.json"))


def test_yaml_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("hidden_size: 64\nheads_num: 8\ntarget: [mlm]\n")
    cfg = load_model_config(str(path))
    assert (cfg.hidden_size, cfg.heads_num, cfg.target, cfg.head_size) == (64, 8, ["mlm"], 8)


def test_shipped_configs_all_build(repo_root):
    import glob
    sizes = {}
    for path in glob.glob(f"{repo_root}/models/bert/*_config.json"):
        cfg = load_model_config(path, {"vocab_size": 30522})
        if cfg.hidden_size <= 512:
            model = build_model(cfg)
            sizes[path.split("/")[-1]] = sum(p.numel() for p in model.parameters())
    assert round(sizes["tiny_config.json"] / 1e6, 1) == 4.4
    assert round(sizes["mini_config.json"] / 1e6, 1) == 11.3


def test_load_reports_missing_unexpected_and_mismatched(tmp_path):
    model = build_model(load_model_config(None, TINY))
    sd = model.state_dict()
    path = str(tmp_path / "m.bin")
    save_state_dict(sd, path)
    report = load_model_weights(build_model(load_model_config(None, TINY)), path)
    assert report.missing == [] and report.unexpected == []

    partial = {k: v for k, v in sd.items() if not k.startswith("target.sp.")}
    with pytest.raises(UserError, match=r"4 model keys missing .*target\.sp\.linear_1\.weight"):
        load_model_weights(model, partial)
    report = load_model_weights(model, partial, allow_missing=("target.",))
    assert len(report.missing) == 4

    renamed = {k.replace("embedding.word.", "embedding.word_embedding."): v for k, v in sd.items()}
    with pytest.raises(UserError, match="checkpoint keys the model does not have: embedding.word_embedding"):
        load_model_weights(model, renamed)

    bigger = build_model(load_model_config(None, dict(TINY, feedforward_size=80)))
    with pytest.raises(UserError, match=r"feed_forward.linear_1.weight \(64, 32\) in checkpoint vs \(80, 32\)"):
        load_model_weights(bigger, path)


def test_loading_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"a": torch.zeros(1), "obj": {1, 2}, "f": subprocess.Popen}, str(path))
    model = build_model(load_model_config(None, TINY))
    with pytest.raises(UserError, match="cannot read as a weights-only checkpoint"):
        load_model_weights(model, str(path))


def test_save_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "m.bin")
    save_state_dict({"w": torch.ones(2)}, path)

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_state_dict({"w": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert not (tmp_path / "m.bin.tmp").exists()


def test_pretraining_from_a_bare_encoder_starts_new_heads(tmp_path, capsys):
    from tencentpretrain.training.plugins import load_pretrained
    cfg = load_model_config(None, dict(TINY, target=["mlm"]))
    source = build_model(cfg)
    encoder_only = {k: v for k, v in source.state_dict().items() if not k.startswith("target.")}
    path = str(tmp_path / "encoder.bin")
    save_state_dict(encoder_only, path)
    model = build_model(cfg)
    report = load_pretrained(model, cfg, path)
    assert "target.mlm.linear_1.weight" in report.missing
    assert torch.equal(model.encoder.transformer[0].feed_forward.linear_1.weight,
                       source.encoder.transformer[0].feed_forward.linear_1.weight)
    assert "has no pre-training head; target.mlm start from random weights" in capsys.readouterr().out
    # a checkpoint with only part of a head is still an error
    partial = dict(encoder_only, **{"target.mlm.linear_1.weight": source.state_dict()["target.mlm.linear_1.weight"]})
    save_state_dict(partial, path)
    with pytest.raises(UserError, match="model keys missing from the checkpoint"):
        load_pretrained(build_model(cfg), cfg, path)
