"""Knowledge distillation (issue 9, item 1): the `kd` block's loss terms, the teacher kept out of the student,
the student saved and loaded as a plain BERT, an exact resume, and a plain run that loads no KD code."""
import json
import os
import pathlib

import numpy as np
import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.data.loader import build_loader
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.errors import UserError
from tencentpretrain.kd.config import KdConfig, plan
from tencentpretrain.kd.feature import FEATURE
from tencentpretrain.layers.capture import Capture
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file, save_state_dict
from tencentpretrain.training import plugins
from tencentpretrain.training.pretrain import main
from test_architecture import _run_and_list_feature_modules as run_and_list_feature_modules

ROOT = pathlib.Path(__file__).resolve().parent.parent
KD = ROOT / "models" / "kd"
TEACHER_CONFIG = KD / "tiny_teacher_config.json"
WORDS = "the cat sat on a mat while dog ran far away from big small red blue green house tree".split()
VOCAB = 5 + len(WORDS)
SEQ = 32
TERMS = ["logits", "cosine", "hidden_mse", "attention_mse", "attention_kl", "query_relation_kl", "key_relation_kl",
         "value_relation_kl"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("kd")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(rng.integers(2, 5)))
            for _ in range(30)]
    (d / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    preprocess(PreprocessOptions(str(d / "corpus.txt"), str(d / "mlm.tpd"), data_processor="mlm",
                                 vocab_path=str(d / "vocab.txt"), seq_length=SEQ, dynamic_masking=True),
               log=open(os.devnull, "w"))
    torch.manual_seed(0)
    teacher = build_model(load_model_config(str(TEACHER_CONFIG), {"vocab_size": VOCAB}))
    save_state_dict(teacher.state_dict(), str(d / "teacher.bin"))
    return {"dir": d, "vocab": str(d / "vocab.txt"), "dataset": str(d / "mlm.tpd"), "teacher": str(d / "teacher.bin")}


def batch_of(data, size=4):
    batch = next(iter(build_loader(data["dataset"], size, seed=3)))
    assert (batch["seg"] == 0).any()  # padding is present, so the masks are exercised
    return batch


def student(data, kd, overrides=None, from_teacher=True, seed=1):
    """A student config (the teacher's, with `overrides`), its model and KD callback."""
    cfg = load_model_config(str(TEACHER_CONFIG), {"vocab_size": VOCAB, "dropout": 0.0, **(overrides or {})})
    cfg.kd = KdConfig.from_dict({"teacher_model_path": data["teacher"], "teacher_config_path": str(TEACHER_CONFIG),
                                 **kd})
    torch.manual_seed(seed)
    model = build_model(cfg)
    if from_teacher:
        load_model_weights(model, data["teacher"])
    (callback,), claims = FEATURE.training_plugins(model, cfg, None)
    return model, callback, claims


def terms_for(data, kd, **kw):
    model, cb, _ = student(data, kd, **kw)
    batch = batch_of(data)
    model.train()
    out = model(batch)
    return cb.terms(batch), cb, model, out, batch


# ---- each term: exactly zero for the teacher itself, positive for another student --------------------
CASES = [({t: 1.0}, t) for t in TERMS] + [
    ({"logits": 1.0, "temperature": 3.0}, "logits"),
    ({"attention_kl": 1.0, "relation_heads": 1}, "attention_kl"),
    ({"value_relation_kl": 1.0, "relation_heads": 4}, "value_relation_kl"),
    ({"hidden_mse": 1.0, "attention_mse": 1.0, "layer_map": [0, 1, 2]}, "hidden_mse"),
]


@pytest.mark.parametrize("kd,term", CASES, ids=[f"{t}-{i}" for i, (_, t) in enumerate(CASES)])
def test_a_term_is_zero_when_the_student_is_the_teacher_and_positive_otherwise(data, kd, term):
    same, cb, model, _, _ = terms_for(data, kd)
    assert term in same and all(v.item() == 0.0 for v in same.values())
    if cb.projection is not None:  # the widths agree: the projection starts as the identity
        assert torch.equal(cb.projection.weight, torch.eye(128)) and not cb.projection.bias.any()
    other, *_ = terms_for(data, kd, from_teacher=False)
    assert other[term].item() > 1e-4


def test_terms_compare_a_narrower_student_through_the_projection_and_relation_heads(data):
    kd = {t: 1.0 for t in TERMS if t != "attention_mse"}
    kd.update(relation_heads=2, layer_map=[0, 2], logits=1.0)
    terms, cb, model, out, _ = terms_for(data, kd, overrides={"hidden_size": 64, "emb_size": 64, "heads_num": 4,
                                                              "feedforward_size": 128, "layers_num": 1},
                                      from_teacher=False)
    assert sorted(terms) == sorted(kd.keys() - {"relation_heads", "layer_map"})
    assert all(v.item() > 0 for v in terms.values())
    assert tuple(cb.projection.weight.shape) == (128, 64)
    loss = sum(terms.values())
    loss.backward()
    assert cb.projection.weight.grad.abs().sum() > 0  # trained with the student
    assert model.encoder.transformer[0].self_attn.linear_layers[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in cb.teacher.parameters())
    assert not cb.teacher.training


def test_extra_loss_weighs_the_terms_and_the_student_mlm_loss(data):
    kd = {"hidden_mse": 2.0, "value_relation_kl": 0.5, "mlm": 0.25}
    model, cb, claims = student(data, kd, from_teacher=False)
    batch = batch_of(data)
    out = model(batch)
    extra = cb.extra_loss(None, batch, out)
    hidden, value = out.metrics["kd_hidden_mse"][0], out.metrics["kd_value_relation_kl"][0]
    expected = 2.0 * hidden + 0.5 * value - 0.75 * out.loss.detach()
    assert extra.item() == pytest.approx(expected.item(), rel=1e-6)
    assert [c.name for c in claims] == ["kd_projection"] and claims[0].predicate("kd_projection.weight", None)
    assert not claims[0].predicate("encoder.transformer.0.self_attn.linear_layers.0.weight", None)


def test_teacher_bf16_setting_picks_the_teachers_precision(data):
    model, cb, _ = student(data, {"logits": 1.0, "teacher_bf16": True})
    batch = batch_of(data)

    def teacher_logits_dtype():
        with torch.no_grad(), cb.teacher_autocast(batch["src"].device):
            return cb.teacher.target.mlm.logits(cb.teacher.encode(batch["src"], batch["seg"])).dtype

    assert teacher_logits_dtype() == torch.bfloat16
    cb.kd.teacher_bf16 = False
    with torch.autocast("cpu", dtype=torch.bfloat16):  # inside a bf16 run's autocast
        assert teacher_logits_dtype() == torch.float32
    cb.kd.teacher_bf16 = "auto"
    assert teacher_logits_dtype() == torch.float32  # auto: fp32 on CPU in an fp32 run ...
    cb.precision = "bf16"
    assert teacher_logits_dtype() == torch.bfloat16  # ... and bf16 in a --bf16 run
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the terms themselves are computed in fp32
        model(batch)
        terms = cb.terms(batch)
    assert terms["logits"].dtype == torch.float32 and torch.isfinite(terms["logits"])


# ---- the capture utility ------------------------------------------------------------------------------
def test_capture_records_states_and_attention_and_leaves_no_hook_behind(data):
    cfg = load_model_config(str(TEACHER_CONFIG), {"vocab_size": VOCAB, "dropout": 0.0})
    model = build_model(cfg).eval()
    batch = batch_of(data)
    L = batch["src"].shape[1]
    with torch.no_grad():
        plain = model.encode(batch["src"], batch["seg"])
        with Capture(model, hidden=[0, 1, 2], attention=[2], outputs=["target.mlm.linear_2"]) as cap:
            hidden = model.encode(batch["src"], batch["seg"])
            model(batch)
            emb = model.embedding(batch["src"], batch["seg"])
            assert torch.equal(cap.hidden[0], emb) and torch.equal(cap.hidden[2], hidden)
            assert torch.equal(hidden, plain)
            rec = cap.attention[2]
            assert tuple(rec.query.shape) == (4, 2, L, 64) and rec.scale == 64 ** -0.5
            probs = rec.probs()
            assert torch.allclose(probs.sum(-1), torch.ones(4, 2, L))
            assert probs[~(batch["seg"] > 0)[:, None, None, :].expand_as(probs)].max() == 0.0
            # the layer's output recomputed from the recorded probabilities and values
            attn = model.encoder.transformer[1].self_attn
            mixed = (probs @ rec.value).transpose(1, 2).reshape(4, L, -1)
            assert torch.allclose(attn.final_linear(mixed), attn(cap.hidden[1], cap.hidden[1], cap.hidden[1],
                                                                   rec.mask), atol=1e-5)
            assert cap.outputs["target.mlm.linear_2"].shape[-1] == VOCAB
        assert cap.hidden == {} and cap.attention == {}
        model.encode(batch["src"], batch["seg"])
        assert cap.hidden == {}  # the hooks are gone
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(ValueError, match="the encoder has layers 1..2"):
        Capture(model, attention=[3])


# ---- the config block and the layer plan ------------------------------------------------------------
def test_shipped_configs_plan_against_their_teachers():
    minilm = load_model_config(str(KD / "minilm_l6_teacher_config.json"))
    assert (minilm.hidden_size, minilm.layers_num, minilm.heads_num, minilm.feedforward_size, minilm.vocab_size,
            minilm.layernorm, minilm.eps) == (384, 6, 12, 1536, 30522, "normal_torch", 1e-12)
    base = load_model_config(str(ROOT / "models" / "bert" / "base_config.json"))
    seen = 0
    for path in sorted(KD.glob("*_to_*.json")):
        cfg = load_model_config(str(path))
        if path.name.startswith("tiny"):
            teacher = load_model_config(str(TEACHER_CONFIG))
        else:
            teacher = minilm if path.name.startswith("minilm") else base
        assert cfg.kd.teacher_config_path in (None, str(KD / f"{path.name.split('_to_')[0]}_teacher_config.json"))
        if not path.name.startswith("tiny"):
            width = int(path.name.split("_to_")[1].split("_")[0])
            assert (cfg.hidden_size, cfg.heads_num, cfg.head_size, cfg.feedforward_size, cfg.layers_num) == (
                width, 12, width // 12, 4 * width, teacher.layers_num)
        p = plan(cfg.kd, cfg, teacher, str(path))
        recipe = path.stem.rsplit("_", 1)[1]
        if recipe == "tinybert":
            assert p.hidden_pairs == [(m, m * teacher.layers_num // cfg.layers_num) for m in range(cfg.layers_num + 1)]
            assert p.attention_pairs == p.hidden_pairs[1:] and p.projection == (cfg.hidden_size, teacher.hidden_size)
        elif recipe == "minilm":
            assert p.relation_layers == (cfg.layers_num, teacher.layers_num) and p.relation_heads == cfg.heads_num
            assert p.projection is None
        else:
            assert cfg.kd.weights() == {"logits": 5.0, "cosine": 1.0}
            assert (cfg.kd.temperature, cfg.kd.mlm) == (2.0, 2.0)
        assert cfg.to_dict().get("kd") is None  # a written config is the plain student's
        seen += 1
    assert seen == 12


@pytest.mark.parametrize("block,overrides,message", [
    ({"hiden_mse": 1.0}, {}, "unknown key 'kd.hiden_mse' (did you mean 'hidden_mse'?)"),
    ({"mlm": 1.0}, {}, "no distillation term has a weight"),
    ({"logits": -1.0}, {}, "'kd.logits' must be a number >= 0"),
    ({"logits": 1.0, "temperature": 0}, {}, "'kd.temperature' must be > 0"),
    ({"logits": 1.0, "teacher_bf16": "yes"}, {}, "'kd.teacher_bf16' must be true, false or \"auto\""),
    ({"hidden_mse": 1.0, "layer_map": "every"}, {}, "'kd.layer_map' must be \"uniform\" or a list"),
    ({"hidden_mse": 1.0, "layer_map": [0, 1]}, {}, "kd.layer_map [0, 1] must give one teacher hidden state"),
    ({"hidden_mse": 1.0}, {"layers_num": 3}, "needs the teacher's layers (2) to be a multiple of the student's (3)"),
    ({"attention_mse": 1.0}, {"heads_num": 4}, "needs the teacher's heads_num (2, not 4)"),
    ({"attention_mse": 1.0, "layer_map": [0, 0, 2]}, {}, "maps a student layer to the teacher's embeddings"),
    ({"attention_kl": 1.0}, {"heads_num": 4}, "set kd.relation_heads"),
    ({"attention_kl": 1.0, "relation_heads": 3}, {}, "kd.relation_heads 3 does not divide the student's attention"),
    ({"value_relation_kl": 1.0, "teacher_layer": 3}, {}, "kd.teacher_layer 3: the teacher has layers 1..2"),
])
def test_bad_blocks_and_mismatched_shapes_are_refused_with_the_fix(data, block, overrides, message):
    with pytest.raises(UserError) as err:
        student(data, block, overrides, from_teacher=False)
    assert message in str(err.value)


def test_teacher_files_and_vocabulary_are_checked(data, tmp_path):
    with pytest.raises(UserError, match="names no teacher: give --teacher_model_path"):
        FEATURE.training_plugins(None, _cfg({"logits": 1.0}), None)
    with pytest.raises(UserError, match="teacher weights not found: .*nope.bin"):
        FEATURE.training_plugins(None, _cfg({"logits": 1.0, "teacher_model_path": str(tmp_path / "nope.bin")}), None)
    with pytest.raises(UserError, match="teacher config not found: .*teacher_config.json .none given, and none beside"):
        FEATURE.training_plugins(None, _cfg({"logits": 1.0, "teacher_model_path": data["teacher"]}), None)
    block = {"logits": 1.0, "teacher_model_path": data["teacher"], "teacher_config_path": str(TEACHER_CONFIG)}
    cfg = _cfg(block, vocab_size=VOCAB + 1)
    with pytest.raises(UserError, match=f"vocabulary of {VOCAB} tokens, the student {VOCAB + 1}"):
        FEATURE.training_plugins(build_model(cfg), cfg, None)
    headless = tmp_path / "encoder.bin"
    save_state_dict({k: v for k, v in load_state_dict_file(data["teacher"]).items() if not k.startswith("target.")},
                    str(headless))
    cfg = _cfg({**block, "teacher_model_path": str(headless)})
    with pytest.raises(UserError, match="has no MLM head .target.mlm.... which kd.logits distils from"):
        FEATURE.training_plugins(build_model(cfg), cfg, None)
    cfg = _cfg({**block, "teacher_model_path": str(headless), "logits": 0.0, "value_relation_kl": 1.0})
    (cb,), _ = FEATURE.training_plugins(build_model(cfg), cfg, None)  # no head needed: a bare encoder will do
    assert cb.weights == {"value_relation_kl": 1.0}


def _cfg(block, **overrides):
    cfg = load_model_config(str(TEACHER_CONFIG), {"vocab_size": VOCAB, **overrides})
    cfg.kd = KdConfig.from_dict(block)
    return cfg


def test_relative_teacher_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "student.json"
    path.write_text(json.dumps({"kd": {"logits": 1.0, "teacher_config_path": "../t.json",
                                       "teacher_model_path": "/abs/t.bin"}}))
    kd = load_model_config(str(path)).kd
    assert kd.teacher_config_path == str(tmp_path / "sub" / ".." / "t.json")
    assert kd.teacher_model_path == "/abs/t.bin"


# ---- pretrain.py: a KD run, its student, its resume ---------------------------------------------------
def kd_args(data, out, recipe, *extra):
    return ["--dataset_path", data["dataset"], "--vocab_path", data["vocab"], "--config_path",
            str(KD / f"tiny_to_64_{recipe}.json"), "--teacher_model_path", data["teacher"],
            "--output_model_path", str(out), "--batch_size", "4", "--learning_rate", "1e-3", "--report_steps", "1",
            *extra]


@pytest.mark.parametrize("recipe", ["distilbert", "tinybert", "minilm"])
def test_kd_run_saves_a_plain_student_that_loads_as_bert(data, tmp_path, capsys, recipe):
    out = tmp_path / "student.bin"
    main(kd_args(data, out, recipe, "--total_steps", "2"))
    logs = capsys.readouterr().out
    terms = {"distilbert": ["logits", "cosine"], "tinybert": ["hidden_mse", "attention_mse"],
             "minilm": ["attention_kl", "value_relation_kl"]}[recipe]
    assert all(f"kd_{t} " in logs for t in terms) and "done: 2 steps" in logs
    assert ("kd_projection(lr 1.0e-03" in logs) == (recipe != "minilm")
    recorded = json.loads((tmp_path / "student_config.json").read_text())
    shipped = json.loads((KD / f"tiny_to_64_{recipe}.json").read_text())
    assert "kd" not in recorded and recorded["hidden_size"] == shipped["hidden_size"] == 64
    plain_cfg = load_model_config(str(tmp_path / "student_config.json"))
    assert plain_cfg.features == {}
    plain = build_model(plain_cfg)
    saved = load_state_dict_file(str(out))
    assert sorted(saved) == sorted(plain.state_dict())  # only the student: no teacher, no projection
    assert saved["embedding.word.embedding.weight"].shape == (VOCAB, 64)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    report = plugins.load_pretrained(plain, plain_cfg, str(out))  # the standard (strict) path
    assert report.missing == [] and report.unexpected == []
    assert all(torch.equal(plain.state_dict()[k], saved[k]) for k in saved)
    assert any(not torch.equal(before[k], saved[k]) for k in saved)


def test_interrupted_and_resumed_kd_run_equals_the_uninterrupted_one(data, tmp_path, capsys):
    steps = ("--total_steps", "4", "--save_checkpoint_steps", "2", "--accumulation_steps", "2")
    full, cut = tmp_path / "full" / "s.bin", tmp_path / "cut" / "s.bin"
    main(kd_args(data, full, "tinybert", *steps))
    main(kd_args(data, cut, "tinybert", *steps))
    for name in (cut, f"{cut}-4"):  # as if killed after step 2's checkpoint
        os.remove(name), os.remove(f"{name}.state.pt")
    capsys.readouterr()
    main(kd_args(data, cut, "tinybert", *steps, "--resume"))
    assert f"resumed from {cut}-2 at step 2" in capsys.readouterr().out
    a, b = load_state_dict_file(str(full)), load_state_dict_file(str(cut))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    states = [torch.load(f"{p}.state.pt", weights_only=True) for p in (full, cut)]
    pa, pb = (s["callbacks"]["kd"]["projection"] for s in states)
    assert torch.equal(pa["weight"], pb["weight"]) and torch.equal(pa["bias"], pb["bias"])
    two = torch.load(f"{cut}-2.state.pt", weights_only=True)["callbacks"]["kd"]["projection"]["weight"]
    assert not torch.equal(two, pa["weight"])  # the projection kept training after the resume


def test_resume_refuses_other_kd_settings(data, tmp_path):
    out = tmp_path / "s.bin"
    main(kd_args(data, out, "tinybert", "--total_steps", "1"))
    block = json.loads((KD / "tiny_to_64_tinybert.json").read_text())
    block["kd"].update(attention_mse=2.0, teacher_config_path=str(TEACHER_CONFIG))
    (tmp_path / "other.json").write_text(json.dumps(block))
    args = kd_args(data, out, "tinybert", "--total_steps", "2", "--resume")
    args[args.index("--config_path") + 1] = str(tmp_path / "other.json")
    with pytest.raises(UserError, match="other kd settings: kd.attention_mse 1.0 then, 2.0 now"):
        main(args)


def test_resume_without_the_kd_block_is_refused_instead_of_going_on_as_plain_mlm(data, tmp_path):
    out = tmp_path / "s.bin"
    main(kd_args(data, out, "minilm", "--total_steps", "1"))  # minilm: no projection, same optimizer groups
    plain = json.loads((KD / "tiny_to_64_minilm.json").read_text())
    plain.pop("kd")
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    args = ["--dataset_path", data["dataset"], "--vocab_path", data["vocab"], "--config_path",
            str(tmp_path / "plain.json"), "--output_model_path", str(out), "--batch_size", "4",
            "--learning_rate", "1e-3", "--total_steps", "2", "--resume"]
    before = load_state_dict_file(str(out))
    with pytest.raises(UserError, match=r"holds the training state of kd, which this run does not have"):
        main(args)
    after = load_state_dict_file(str(out))
    assert all(torch.equal(before[k], after[k]) for k in before) and not os.path.exists(f"{out}-2")


# ---- a plain run loads no KD code; a KD run does -------------------------------------------------------
def test_a_plain_run_imports_no_kd_module_and_teacher_flags_switch_kd_on(data, tmp_path):
    plain = ["--dataset_path", data["dataset"], "--vocab_path", data["vocab"], "--config_path",
             str(TEACHER_CONFIG), "--hidden_size", "32", "--emb_size", "32", "--feedforward_size", "64",
             "--layers_num", "1", "--total_steps", "1", "--batch_size", "4"]
    loaded, out = run_and_list_feature_modules("pretrain.py", plain + ["--output_model_path", str(tmp_path / "p.bin")],
                                               tmp_path)
    assert "done: 1 steps" in out and loaded == []
    flags = ["--teacher_model_path", data["teacher"], "--teacher_config_path", str(TEACHER_CONFIG)]
    loaded, out = run_and_list_feature_modules("pretrain.py", plain + flags + ["--output_model_path",
                                                                                str(tmp_path / "kd.bin")], tmp_path)
    assert "tencentpretrain.kd.feature" in loaded
    assert "the config has no kd block: distilling with DistilBERT's soft targets" in out and "kd_logits" in out
    assert "done: 1 steps" in out
