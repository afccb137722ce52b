"""The core knows no feature (issue 10, item 1): features join through tencentpretrain/features.py only,
a plain BERT run loads no feature code, and a new feature is one module plus one line in FEATURES."""
import ast
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from tencentpretrain import features
from tencentpretrain.config import ModelConfig, config_for_checkpoint, load_model_config, table_sizes
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.errors import UserError
from tencentpretrain.features import Feature, FeatureEntry
from tencentpretrain.model_builder import build_model
from tencentpretrain.training import plugins
from tencentpretrain.training.pretrain import build_parser
from tencentpretrain.utils.io import write_json

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIB = ROOT / "tencentpretrain"
# The core (README "Principles") and the modules every run imports with it.
CORE = ["config.py", "registry.py", "model_builder.py", "opts.py", "model_io.py", "errors.py", "features.py",
        "inference_utils.py", "models", "layers", "embeddings", "encoders", "decoders", "targets", "training",
        "tasks", "data", "utils", "convert"]
FEATURE_PACKAGES = sorted({entry.module.rsplit(".", 1)[0] for entry in features.FEATURES.values()})
TINY_CONFIG = ROOT / "models" / "bert" / "tiny_config.json"
WORDS = "the cat sat on a mat while dog ran far away from big small red blue green house tree".split()


def _core_files():
    for name in CORE:
        path = LIB / name
        yield from (sorted(path.rglob("*.py")) if path.is_dir() else [path])


def _imported_modules(tree):
    """Every module an `import` or `from ... import` names, at any depth (function-level included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_core_module_imports_a_feature_package():
    assert FEATURE_PACKAGES == ["tencentpretrain.kd", "tencentpretrain.wid"]
    files = list(_core_files())
    assert len(files) > 40  # the scan sees the core
    offenders = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for module in _imported_modules(tree):
            if any(module == pkg or module.startswith(pkg + ".") for pkg in FEATURE_PACKAGES):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_the_scan_catches_a_function_level_feature_import():
    tree = ast.parse("def f():\n    from tencentpretrain import wid\n    import tencentpretrain.wid.merge\n")
    assert {"tencentpretrain.wid", "tencentpretrain.wid.merge"} <= set(_imported_modules(tree))


# ---- a plain run in a fresh interpreter loads no feature module -------------------------------------
DRIVER = """
import json, runpy, sys
script, args = sys.argv[1], json.loads(sys.argv[2])
sys.argv = [script] + args
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exit:
    if exit.code:
        raise
print("FEATURE_MODULES " + json.dumps(sorted(m for m in sys.modules if m.startswith(("tencentpretrain.wid",
                                                                                 "tencentpretrain.kd")))))
"""


def _run_and_list_feature_modules(script, args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / script), json.dumps(args)], cwd=str(cwd),
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [l for l in res.stdout.splitlines() if l.startswith("FEATURE_MODULES ")][-1]
    return json.loads(line.split(" ", 1)[1]), res.stdout


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("arch")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(3)) for _ in range(12)]
    (d / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    preprocess(PreprocessOptions(str(d / "corpus.txt"), str(d / "bert.tpd"), data_processor="bert",
                                 vocab_path=str(d / "vocab.txt"), seq_length=32), log=open(os.devnull, "w"))
    return d


def test_plain_bert_pretraining_imports_no_feature_module(tiny_dataset, tmp_path):
    args = ["--dataset_path", str(tiny_dataset / "bert.tpd"), "--vocab_path", str(tiny_dataset / "vocab.txt"),
            "--config_path", str(TINY_CONFIG), "--hidden_size", "32", "--emb_size", "32", "--heads_num", "2",
            "--feedforward_size", "64", "--layers_num", "1", "--max_seq_length", "32", "--batch_size", "4",
            "--total_steps", "2", "--report_steps", "1", "--output_model_path", str(tmp_path / "m.bin"),
            "--tb_path", str(tmp_path / "tb")]  # --tb_path is a core alias, not a WID flag
    loaded, out = _run_and_list_feature_modules("pretrain.py", args, tmp_path)
    assert "done: 2 steps" in out and (tmp_path / "m.bin").exists() and os.listdir(tmp_path / "tb")
    assert loaded == []


def test_plain_bert_fine_tuning_imports_no_feature_module(tmp_path):
    samples = ROOT / "datasets" / "samples"
    args = ["--config_path", str(TINY_CONFIG), "--layers_num", "1", "--vocab_path", str(samples / "vocab.txt"),
            "--train_path", str(samples / "tsv" / "single_train.tsv"), "--epochs_num", "1", "--batch_size", "4",
            "--seq_length", "32", "--device", "cpu", "--output_model_path", str(tmp_path / "c.bin")]
    loaded, out = _run_and_list_feature_modules("finetune/run_classifier.py", args, tmp_path)
    assert "done: 3 steps" in out and (tmp_path / "c.bin").is_file()
    assert loaded == []


def test_pretrain_help_lists_the_features_flags(tmp_path):
    """The positive control of the two tests above: --help imports the features to list their flags."""
    loaded, out = _run_and_list_feature_modules("pretrain.py", ["--help"], tmp_path)
    assert "--target_dim TARGET_DIM" in out and "--tb_path TB_PATH" in out
    assert "tencentpretrain.wid.feature" in loaded


def test_registry_lists_feature_components_without_importing_and_imports_them_on_use():
    code = ("import sys\nfrom tencentpretrain.registry import ENCODERS, TARGETS\n"
            "wid = lambda: sorted(m for m in sys.modules if m.startswith('tencentpretrain.wid'))\n"
            "assert 'wid_transformer' in ENCODERS.names() and 'wid_mlm' in TARGETS\n"
            "assert ENCODERS.get('transformer') and wid() == [], wid()\n"
            "print(ENCODERS.get('wid_transformer').__module__, 'tencentpretrain.wid.feature' in wid())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["tencentpretrain.wid.modules", "True"]


# ---- the command line --------------------------------------------------------------------------------
def test_unknown_flag_is_argparses_error_after_the_features_had_their_say(capsys):
    with pytest.raises(SystemExit) as exit:
        features.parse_args(build_parser(), ["--dataset_path", "d", "--output_model_path", "o", "--bogus", "1"])
    assert exit.value.code == 2
    assert "unrecognized arguments: --bogus 1" in capsys.readouterr().err


def test_a_feature_flag_parses_as_if_it_had_always_been_there():
    argv = ["--dataset_path", "d", "--output_model_path", "o", "--target", "mlm", "--target_dim", "24",
            "--w_step", "5", "--tb_path", "tb"]
    args = features.parse_args(build_parser(), argv)
    assert (args.target, args.target_dim, args.w_step, args.tensorboard_dir) == (["mlm"], 24, 5, "tb")
    plain = features.parse_args(build_parser(), argv[:4])
    assert "target_dim" not in vars(plain) and plain.dataset_path == "d"


# ---- a new feature is one module plus one line in FEATURES --------------------------------------------
class ToyFeature(Feature):
    """Scales the word embedding after the build; counts what the core asked of it."""
    name = "toy"

    def __init__(self):
        self.calls = []

    def parse_block(self, value, where):
        if not isinstance(value, dict) or set(value) != {"scale"}:
            raise UserError(f"{where}: the toy block is {{\"scale\": <number>}}")
        return types.SimpleNamespace(to_dict=lambda: dict(value), **value)

    def add_options(self, parser):
        parser.add_argument("--toy_scale", type=float, default=None)

    def apply_options(self, model_cfg, args):
        if getattr(args, "toy_scale", None) is not None:
            model_cfg.toy = self.parse_block({"scale": args.toy_scale}, "command line")

    def on_model_built(self, model):
        self.calls.append("built")
        with torch.no_grad():
            model.embedding.word.embedding.weight.mul_(model.cfg.toy.scale)

    def training_plugins(self, model, model_cfg, train_cfg):
        return ["toy-callback"], ["toy-claim"]


@pytest.fixture
def toy(monkeypatch):
    feature = ToyFeature()
    module = types.ModuleType("toy_feature_module")
    module.FEATURE = feature
    monkeypatch.setitem(sys.modules, "toy_feature_module", module)
    monkeypatch.setitem(features.FEATURES, "toy", FeatureEntry("toy_feature_module"))
    monkeypatch.setattr(features, "_loaded", dict(features._loaded))
    return feature


def test_a_new_feature_plugs_into_config_model_training_and_cli(toy, tmp_path):
    base = json.loads(TINY_CONFIG.read_text())
    base.update(hidden_size=32, emb_size=32, heads_num=2, feedforward_size=64, layers_num=1, vocab_size=40)
    path = tmp_path / "toy.json"
    path.write_text(json.dumps({**base, "toy": {"scale": 0.0}}))
    cfg = load_model_config(str(path))
    assert cfg.toy.scale == 0.0 and cfg.to_dict()["toy"] == {"scale": 0.0}
    model = build_model(cfg)
    assert toy.calls == ["built"] and float(model.embedding.word.embedding.weight.detach().abs().sum()) == 0.0
    assert plugins.build_plugins(model, cfg, None) == (["toy-callback"], ["toy-claim"])
    (tmp_path / "bad.json").write_text(json.dumps({**base, "toy": {"scal": 1}}))
    with pytest.raises(UserError, match="bad.json: the toy block is"):
        load_model_config(str(tmp_path / "bad.json"))
    args = features.parse_args(build_parser(), ["--dataset_path", "d", "--output_model_path", "o",
                                                "--toy_scale", "3"])
    plain = load_model_config(str(TINY_CONFIG))
    assert plain.toy is None and features.apply_options(plain, args).toy.scale == 3.0
    assert ModelConfig().toy is None


def test_a_feature_block_name_is_not_an_unknown_key_but_a_typo_is(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"wdi": {"target_hidden_size": 24}}))
    with pytest.raises(UserError, match="unknown key 'wdi' \\(did you mean 'wid'\\?\\)"):
        load_model_config(str(path))


# ---- shared helpers (item 6) -----------------------------------------------------------------------------
def test_config_for_checkpoint_takes_table_sizes_from_the_weights_and_flags_win():
    sd = {"embedding.word.embedding.weight": torch.zeros(40, 8), "embedding.pos.embedding.weight": torch.zeros(24, 8)}
    assert table_sizes(sd) == {"vocab_size": 40, "max_seq_length": 24}
    assert table_sizes({}) == {}
    cfg = config_for_checkpoint(str(TINY_CONFIG), sd)
    assert (cfg.vocab_size, cfg.max_seq_length) == (40, 24)
    assert config_for_checkpoint(str(TINY_CONFIG), sd, {"max_seq_length": 16}).max_seq_length == 16


def test_write_json_is_indented_with_a_final_newline_and_replaces_atomically(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json(str(path), {"a": [1, 2], "é": 1})
    assert path.read_text(encoding="utf-8") == '{\n  "a": [\n    1,\n    2\n  ],\n  "\\u00e9": 1\n}\n'
    write_json(str(path), {"é": 2}, ensure_ascii=False)
    assert path.read_text(encoding="utf-8") == '{\n  "é": 2\n}\n' and os.listdir(path.parent) == ["x.json"]
