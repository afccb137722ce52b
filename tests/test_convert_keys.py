"""Key mappings on synthetic state dicts: no `transformers` needed."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.convert.hf_bert import (hf_to_tencentpretrain, key_map, rescale_layernorm,
                                             tencentpretrain_to_hf)
from tencentpretrain.convert.hf_files import (convert_hf_to_tencentpretrain, convert_tencentpretrain_to_hf,
                                              export_main, import_main)
from tencentpretrain.errors import UserError, run_cli
from tencentpretrain.layers.layer_norm import LayerNorm, TorchLayerNorm
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file, save_state_dict

H, F, V, P, LAYERS = 8, 16, 30, 12, 2
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(emb_size=H, hidden_size=H, feedforward_size=F, heads_num=2, layers_num=LAYERS,
            max_seq_length=P, vocab_size=V, dropout=0.0, layernorm="normal_torch", tie_weights=True)


def script(name):
    return os.path.join(ROOT, "scripts", name)


def hf_state_dict(heads=("mlm", "sp"), prefix="bert.", seed=0):
    """A random HF-named BERT state dict (shapes only matter), as a HF model would save it."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"embeddings.word_embeddings.weight": (V, H), "embeddings.position_embeddings.weight": (P, H),
              "embeddings.token_type_embeddings.weight": (2, H), "embeddings.LayerNorm.weight": (H,),
              "embeddings.LayerNorm.bias": (H,)}
    for layer in range(LAYERS):
        base = f"encoder.layer.{layer}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            shapes[base + name + ".weight"], shapes[base + name + ".bias"] = (H, H), (H,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[base + name + ".weight"], shapes[base + name + ".bias"] = (H,), (H,)
        shapes.update({base + "intermediate.dense.weight": (F, H), base + "intermediate.dense.bias": (F,),
                       base + "output.dense.weight": (H, F), base + "output.dense.bias": (H,)})
    if "sp" in heads or "classifier" in heads or "pooler" in heads:
        shapes.update({"pooler.dense.weight": (H, H), "pooler.dense.bias": (H,)})
    sd = {prefix + k: torch.randn(s, generator=g) for k, s in shapes.items()}
    if "mlm" in heads:
        sd.update({"cls.predictions.transform.dense.weight": torch.randn(H, H, generator=g),
                   "cls.predictions.transform.dense.bias": torch.randn(H, generator=g),
                   "cls.predictions.transform.LayerNorm.weight": torch.randn(H, generator=g),
                   "cls.predictions.transform.LayerNorm.bias": torch.randn(H, generator=g),
                   "cls.predictions.bias": torch.randn(V, generator=g)})
    if "sp" in heads:
        sd.update({"cls.seq_relationship.weight": torch.randn(2, H, generator=g),
                   "cls.seq_relationship.bias": torch.randn(2, generator=g)})
    if "classifier" in heads:
        sd.update({"classifier.weight": torch.randn(3, H, generator=g), "classifier.bias": torch.randn(3, generator=g)})
    if "qa" in heads:
        sd.update({"qa_outputs.weight": torch.randn(2, H, generator=g), "qa_outputs.bias": torch.randn(2, generator=g)})
    return sd


def test_key_map_covers_every_model_key_once():
    model = build_model(load_model_config(None, TINY))
    mapping = key_map(LAYERS, ("mlm", "sp"))
    assert sorted(mapping.values()) == sorted(model.state_dict())
    assert mapping["encoder.layer.1.attention.self.value.bias"] == \
        "encoder.transformer.1.self_attn.linear_layers.2.bias"
    assert mapping["encoder.layer.0.output.LayerNorm.weight"] == "encoder.transformer.0.layer_norm_2.gamma"
    assert mapping["pooler.dense.weight"] == "target.sp.linear_1.weight"
    assert mapping["cls.predictions.bias"] == "target.mlm.linear_2.bias"


@pytest.mark.parametrize("prefix", ["bert.", ""])
def test_import_with_or_without_prefix_loads_into_our_model(prefix):
    hf = hf_state_dict(prefix=prefix)
    ours, report = hf_to_tencentpretrain(hf)
    assert report.architecture == "BertForPreTraining" and report.target == ["mlm", "sp"]
    assert report.tie_weights  # no decoder weight in the file: tied to the word table
    seg = ours["embedding.seg.embedding.weight"]
    hf_seg = hf[prefix + "embeddings.token_type_embeddings.weight"]
    assert seg.shape == (3, H)
    assert torch.equal(seg[1:], hf_seg) and torch.equal(seg[0], hf_seg[0])  # row 0 = HF row 0
    assert torch.equal(ours["target.sp.linear_1.weight"], hf[prefix + "pooler.dense.weight"])
    model = build_model(load_model_config(None, TINY))
    report = load_model_weights(model, ours)
    assert report.missing == [] and report.unexpected == []


def test_prefixed_and_bare_imports_are_identical():
    a, _ = hf_to_tencentpretrain(hf_state_dict(prefix="bert."))
    b, _ = hf_to_tencentpretrain(hf_state_dict(prefix=""))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_hf_ours_hf_is_exact():
    hf = hf_state_dict(prefix="bert.")
    ours, _ = hf_to_tencentpretrain(hf)
    back, hf_cfg, _ = tencentpretrain_to_hf(ours, load_model_config(None, TINY))
    assert hf_cfg["architectures"] == ["BertForPreTraining"] and hf_cfg["tie_word_embeddings"]
    assert back.keys() == hf.keys()
    assert all(torch.equal(back[k], hf[k]) for k in hf)


def test_round_trip_ours_hf_ours_is_exact_and_drops_segment_row_0():
    model = build_model(load_model_config(None, TINY))
    sd = model.state_dict()
    hf, _, _ = tencentpretrain_to_hf(sd, load_model_config(None, TINY))
    assert hf["bert.embeddings.token_type_embeddings.weight"].shape == (2, H)
    assert "cls.predictions.decoder.weight" not in hf  # tied, as HF writes it
    back, _ = hf_to_tencentpretrain(hf)
    back["embedding.seg.embedding.weight"][0] = sd["embedding.seg.embedding.weight"][0]  # row 0 is not exported
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_untied_decoder_is_kept():
    cfg = load_model_config(None, {**TINY, "tie_weights": False})
    sd = build_model(cfg).state_dict()
    hf, hf_cfg, _ = tencentpretrain_to_hf(sd, cfg)
    assert not hf_cfg["tie_word_embeddings"]
    assert torch.equal(hf["cls.predictions.decoder.weight"], sd["target.mlm.linear_2.weight"])
    back, report = hf_to_tencentpretrain(hf)
    assert not report.tie_weights and torch.equal(back["target.mlm.linear_2.weight"], sd["target.mlm.linear_2.weight"])


@pytest.mark.parametrize("heads,arch,our_keys", [
    (("mlm",), "BertForMaskedLM", ["target.mlm.linear_1.weight"]),
    (("classifier",), "BertForSequenceClassification", ["output_layer_1.weight", "output_layer_2.bias"]),
    (("qa",), "BertForQuestionAnswering", ["output_layer.weight", "output_layer.bias"]),
])
def test_task_heads_map_to_our_names_and_back(heads, arch, our_keys):
    hf = hf_state_dict(heads=heads)
    ours, report = hf_to_tencentpretrain(hf)
    assert report.architecture == arch
    for key in our_keys:
        assert key in ours
    back, hf_cfg, _ = tencentpretrain_to_hf(ours, load_model_config(None, TINY))
    assert hf_cfg["architectures"] == [arch] and back.keys() == hf.keys()
    if "classifier" in heads:
        assert len(hf_cfg["id2label"]) == 3


def test_bare_encoder_reports_missing_heads_and_pooler_choice():
    hf = hf_state_dict(heads=("pooler",), prefix="")
    hf["embeddings.position_ids"] = torch.arange(P)[None]
    ours, report = hf_to_tencentpretrain(hf)
    assert report.architecture == "BertModel" and report.target == ["mlm"]
    assert report.ignored == ["embeddings.position_ids"]
    assert "target.sp.linear_1.weight" in report.dropped and not any(k.startswith("target.") for k in ours)
    assert any("no MLM head" in n for n in report.notes)
    kept, report = hf_to_tencentpretrain(hf, target=["mlm", "sp"])
    assert "target.sp.linear_1.weight" in kept and any("next-sentence" in n for n in report.notes)


def test_legacy_gamma_beta_and_decoder_bias_duplicate():
    hf = hf_state_dict(heads=("mlm",))
    hf = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in hf.items()}
    hf["cls.predictions.decoder.bias"] = hf["cls.predictions.bias"].clone()
    hf["cls.predictions.decoder.weight"] = hf["bert.embeddings.word_embeddings.weight"].clone()
    ours, report = hf_to_tencentpretrain(hf)
    assert "cls.predictions.decoder.bias" in report.ignored and report.tie_weights
    assert torch.equal(ours["embedding.layer_norm.gamma"], hf["bert.embeddings.LayerNorm.gamma"])
    hf["cls.predictions.decoder.bias"] += 1
    with pytest.raises(UserError, match="differs from 'cls.predictions.bias'"):
        hf_to_tencentpretrain(hf)


def test_unknown_keys_are_an_error_listing_them():
    hf = hf_state_dict()
    hf["roberta.lm_head.dense.weight"] = torch.zeros(H, H)
    with pytest.raises(UserError, match=r"1 keys this converter does not know: roberta\.lm_head\.dense\.weight"):
        hf_to_tencentpretrain(hf)
    hf = hf_state_dict()
    del hf["bert.encoder.layer.1.output.dense.bias"]
    with pytest.raises(UserError, match=r"incomplete checkpoint, missing encoder\.layer\.1\.output\.dense\.bias"):
        hf_to_tencentpretrain(hf)


def test_export_rescales_tencentpretrain_layernorm_unless_strict_and_refuses_unknown_keys():
    cfg = load_model_config(None, {**TINY, "layernorm": "normal"})
    sd = build_model(cfg).state_dict()
    with pytest.raises(UserError, match="--strict_layernorm refuses"):
        tencentpretrain_to_hf(sd, cfg, strict_layernorm=True)
    hf, hf_cfg, notes = tencentpretrain_to_hf(sd, cfg)
    assert notes and abs(hf_cfg["layer_norm_eps"] - 1e-12 * (H - 1) / H) < 1e-20
    cfg2 = load_model_config(None, TINY)
    sd2 = build_model(cfg2).state_dict()
    sd2["encoder.transformer.0.feed_forward.linear_1.compactor_in.weight"] = torch.eye(H)
    with pytest.raises(UserError, match="merge it first"):
        tencentpretrain_to_hf(sd2, cfg2)


def test_layernorm_rescaling_matches_the_other_convention():
    torch.manual_seed(0)
    x = torch.randn(4, 64) * 3 + 1
    ours = LayerNorm(64, eps=1e-6)
    with torch.no_grad():
        ours.gamma.uniform_(0.5, 1.5)
        ours.beta.normal_()
    sd = rescale_layernorm({"ln.gamma": ours.gamma.detach().clone(), "ln.beta": ours.beta.detach()}, "normal_torch")
    torch_ln = TorchLayerNorm(64, eps=(1e-6 * ((63 / 64) ** 0.5)) ** 2)
    torch_ln.load_state_dict({"gamma": sd["ln.gamma"], "beta": sd["ln.beta"]})
    plain = TorchLayerNorm(64, eps=1e-12)
    plain.load_state_dict({"gamma": ours.gamma.detach(), "beta": ours.beta.detach()})
    with torch.no_grad():
        assert (torch_ln(x) - ours(x)).abs().max() < 1e-5
        assert (plain(x) - ours(x)).abs().max() > 1e-3  # without rescaling the conventions differ


def test_files_and_cli(tmp_path, capsys):
    hf = hf_state_dict(heads=("mlm",))
    folder = tmp_path / "hf"
    folder.mkdir()
    torch.save(hf, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(dict(
        model_type="bert", architectures=["BertForMaskedLM"], vocab_size=V, hidden_size=H,
        num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=F, max_position_embeddings=P,
        hidden_act="gelu", layer_norm_eps=1e-12, type_vocab_size=2, hidden_dropout_prob=0.1)))
    out = tmp_path / "ours.bin"
    proc = subprocess.run([sys.executable, script("convert_bert_from_huggingface_to_tencentpretrain.py"),
                           "--input_model_path", str(folder), "--output_model_path", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "ours_config.json").read_text())
    assert cfg["layernorm"] == "normal_torch" and cfg["layernorm_eps"] == 1e-12 and cfg["target"] == ["mlm"]
    assert cfg["heads_num"] == 2 and cfg["feedforward_size"] == F and cfg["vocab_size"] == V
    model = build_model(load_model_config(str(tmp_path / "ours_config.json")))
    assert load_model_weights(model, str(out)).missing == []
    # Export to a single weights file and to a folder in .bin format.
    convert_tencentpretrain_to_hf(str(out), str(tmp_path / "ours_config.json"), str(tmp_path / "w.bin"),
                                  log=lambda s: None)
    assert load_state_dict_file(str(tmp_path / "w.bin")).keys() == hf.keys()
    convert_tencentpretrain_to_hf(str(out), str(tmp_path / "ours_config.json"), str(tmp_path / "back"),
                                  fmt="bin", log=lambda s: None)
    hf_cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert hf_cfg["architectures"] == ["BertForMaskedLM"] and hf_cfg["model_type"] == "bert"
    assert (tmp_path / "back" / "pytorch_model.bin").is_file()
    # TencentPretrain's LayerNorm exports by default; --strict_layernorm refuses it with `error: ...`, status 2.
    cfg["layernorm"] = "normal"
    (tmp_path / "normal_config.json").write_text(json.dumps(cfg))
    export = [sys.executable, script("convert_bert_from_tencentpretrain_to_huggingface.py"), "--input_model_path",
              str(out), "--config_path", str(tmp_path / "normal_config.json"),
              "--output_model_path", str(tmp_path / "n")]
    proc = subprocess.run(export + ["--strict_layernorm"], capture_output=True, text=True)
    assert proc.returncode == 2 and "error:" in proc.stderr and "--strict_layernorm" in proc.stderr
    assert not (tmp_path / "n").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(export_main, export[2:])
    printed = capsys.readouterr().out
    assert exit_.value.code == 0 and "warning:" in printed and "layernorm deviation: max abs difference" in printed
    assert (tmp_path / "n" / "config.json").is_file()
    bad = tmp_path / "bad.bin"
    torch.save({**hf, "foo.weight": torch.zeros(1)}, bad)
    with pytest.raises(SystemExit) as exit_:
        run_cli(import_main, ["--input_model_path", str(bad), "--output_model_path", str(tmp_path / "x.bin")])
    assert exit_.value.code == 2 and "foo.weight" in capsys.readouterr().err


def test_single_file_without_config_writes_weights_only(tmp_path):
    path = tmp_path / "w.bin"
    save_state_dict(hf_state_dict(), str(path))
    ours, config, _ = convert_hf_to_tencentpretrain(str(path), str(tmp_path / "o.bin"), log=lambda s: None)
    assert config is None and (tmp_path / "o.bin").is_file() and not (tmp_path / "o_config.json").exists()
    with pytest.raises(UserError, match="--hf_config_path"):
        convert_hf_to_tencentpretrain(str(path), str(tmp_path / "o.bin"), str(tmp_path / "c.json"), log=lambda s: None)
