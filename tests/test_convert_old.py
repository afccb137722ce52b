"""Old UER-py names and the WID reference code's compactor names and mask file -> ours."""
import os
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.convert.uer_old import convert_old_to_new, masks_to_buffers, read_reference_masks, wid_key
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "convert_tencentpretrain_from_old_to_new.py")
LAYERS, V = 2, 50
BERT = dict(emb_size=8, hidden_size=8, feedforward_size=16, heads_num=2, layers_num=LAYERS,
            max_seq_length=12, vocab_size=V, dropout=0.0)
OLD_NAMES = {"embedding.word.embedding.": "embedding.word_embedding.",
             "embedding.pos.embedding.": "embedding.position_embedding.",
             "embedding.seg.embedding.": "embedding.segment_embedding.",
             "target.mlm.linear_1.": "target.mlm_linear_1.", "target.mlm.layer_norm.": "target.layer_norm.",
             "target.mlm.linear_2.": "target.mlm_linear_2.", "target.sp.linear_1.": "target.nsp_linear_1.",
             "target.sp.linear_2.": "target.nsp_linear_2."}


def to_old(sd):
    out = {}
    for key, value in sd.items():
        for new, old in OLD_NAMES.items():
            if key.startswith(new):
                key = old + key[len(new):]
        out[key] = value
    return out


def reference_compactor_names(layers):
    """Every compactor parameter the WID reference code (WID-NAACL2024, uer/) creates for BERT."""
    names = ["embedding.emb_compactor.weight", "target.mlm_linear_1_left_compactor.weight",
             "target.mlm_linear_1_right_compactor.weight", "target.mlm_linear_2_left_compactor.weight"]
    for layer in range(layers):
        base = f"encoder.transformer.{layer}."
        for i in range(3):
            names += [f"{base}self_attn.left_compactor.{i}.weight", f"{base}self_attn.right_compactor.{i}.weight"]
        names += [f"{base}self_attn.final_linear_left_compactor.weight",
                  f"{base}self_attn.final_linear_right_compactor.weight"]
        for i in (1, 2):
            names += [f"{base}feed_forward.linear_{i}_left_compactor.weight",
                      f"{base}feed_forward.linear_{i}_right_compactor.weight"]
    return names


def test_old_uer_names_become_new_and_load():
    new = build_model(load_model_config(None, BERT)).state_dict()
    converted, renamed = convert_old_to_new({"module." + k: v for k, v in to_old(new).items()})
    assert converted.keys() == new.keys()
    assert ("module.target.layer_norm.gamma", "target.mlm.layer_norm.gamma") in renamed
    assert load_model_weights(build_model(load_model_config(None, BERT)), converted).missing == []
    assert convert_old_to_new(new)[1] == []  # new names pass through


def test_old_to_new_rejects_unknown_keys():
    old = to_old(build_model(load_model_config(None, BERT)).state_dict())
    with pytest.raises(UserError, match=r"2 keys have no known new name: target\.foo\.weight, "
                                        r"x\.some_compactor\.weight"):
        convert_old_to_new({**old, "target.foo.weight": torch.zeros(1), "x.some_compactor.weight": torch.zeros(1)})


@pytest.fixture
def wid_model():
    pytest.importorskip("tencentpretrain.wid.modules")
    cfg = load_model_config(os.path.join(ROOT, "models", "wid", "tiny_48x4_to_24_dim.json"),
                            {"vocab_size": V, "layers_num": LAYERS})
    return cfg, build_model(cfg)


def reference_checkpoint(model, seed=0):
    """Our WID model's state, written the way the reference code names it (plus `module.`)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
          for k, v in model.state_dict().items() if "wid_mask." not in k}
    ref = to_old({k: v for k, v in sd.items() if "compactor" not in k})
    for name in reference_compactor_names(LAYERS):
        ref[name] = sd[wid_key(name)]
    return {"module." + k: v for k, v in ref.items()}, sd


def test_wid_reference_compactors_map_onto_our_wid_model(wid_model):
    cfg, model = wid_model
    ref, ours = reference_checkpoint(model)
    assert len([k for k in ref if "compactor" in k]) == len([k for k in ours if "compactor" in k])
    converted, renamed = convert_old_to_new(ref)
    assert converted.keys() == ours.keys()
    assert all(torch.equal(converted[k], ours[k]) for k in ours)
    # Everything but the mask buffers loads (those come from the mask file, next test).
    masks = tuple(k for k in model.state_dict() if "wid_mask." in k)
    report = load_model_weights(model, converted, allow_missing=masks)
    assert sorted(report.missing) == sorted(masks)


def test_wid_reference_mask_file_becomes_our_mask_buffers(wid_model, tmp_path):
    cfg, model = wid_model
    ref, _ = reference_checkpoint(model)
    lines = ["1000\tmodule.encoder.transformer.0.self_attn.left_compactor.2.weight\t[0, 1]",
             "2000\tmodule.encoder.transformer.0.self_attn.left_compactor.2.weight\t[0, 1, 5, 7]",
             "2000\tmodule.encoder.transformer.1.self_attn.final_linear_left_compactor.weight\t[3]",
             "2000\tmodule.encoder.transformer.0.feed_forward.linear_2_left_compactor.weight\t[10, 159]",
             "2000\tmodule.target.mlm_linear_2_left_compactor.weight\t[47]"]
    mask_path = tmp_path / "masks.txt"
    mask_path.write_text("\n".join(lines) + "\n")
    masks = read_reference_masks(str(mask_path))  # default: the last step
    assert masks["encoder.transformer.0.self_attn.left_compactor.2.weight"] == [0, 1, 5, 7]
    assert read_reference_masks(str(mask_path), 1000) == {
        "encoder.transformer.0.self_attn.left_compactor.2.weight": [0, 1]}
    with pytest.raises(UserError, match="no masks for step 3; steps in the file: 1000, 2000"):
        read_reference_masks(str(mask_path), 3)
    old_path = tmp_path / "ref.bin"
    torch.save(ref, old_path)
    out = tmp_path / "new.bin"
    proc = subprocess.run([sys.executable, SCRIPT, "--input_model_path", str(old_path), "--output_model_path",
                           str(out), "--mask_path", str(mask_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "4 mask groups added" in proc.stdout
    sd = load_state_dict_file(str(out))
    keep = sd["embedding.wid_mask.keep"]
    assert keep.dtype == torch.bool and keep.shape == (48,) and (~keep).nonzero().flatten().tolist() == [0, 1, 5, 7]
    assert (~sd["encoder.transformer.1.self_attn.wid_mask.keep"]).nonzero().flatten().tolist() == [3]
    assert (~sd["encoder.transformer.0.feed_forward.wid_mask.keep"]).nonzero().flatten().tolist() == [10, 159]
    assert torch.equal(sd["target.mlm.wid_mask.decay"], sd["target.mlm.wid_mask.keep"].float())
    # Groups the file does not mention stay unmasked: the buffers are only missing, and load as such.
    report = load_model_weights(model, sd, allow_missing=("encoder.transformer.0.self_attn.wid_mask",
                                                          "encoder.transformer.1.feed_forward.wid_mask"))
    assert sorted(report.missing) == ["encoder.transformer.0.self_attn.wid_mask.decay",
                                      "encoder.transformer.0.self_attn.wid_mask.keep",
                                      "encoder.transformer.1.feed_forward.wid_mask.decay",
                                      "encoder.transformer.1.feed_forward.wid_mask.keep"]
    assert not bool(model.embedding.wid_mask.keep[5])


def test_head_strategy_masks_expand_heads_and_bad_indices_are_errors(wid_model):
    cfg, model = wid_model
    ref, _ = reference_checkpoint(model)
    sd, _ = convert_old_to_new(ref)
    name = "encoder.transformer.1.self_attn.final_linear_left_compactor.weight"
    buffers = masks_to_buffers({name: [1]}, sd, strategy="head", head_size=12)
    pruned = (~buffers["encoder.transformer.1.self_attn.wid_mask.keep"]).nonzero().flatten().tolist()
    assert pruned == list(range(12, 24))
    with pytest.raises(UserError, match="outside 0..47"):
        masks_to_buffers({name: [1]}, sd, strategy="head", head_size=64)
