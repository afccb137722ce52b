"""Held-out MLM accuracy, latency and parameter counts (tencentpretrain/evaluation.py, scripts/evaluate_mlm.py)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.data.loader import DataLoader
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.evaluation import count_parameters, load_model, measure_latency, mlm_accuracy
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import save_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"emb_size": 16, "hidden_size": 16, "feedforward_size": 32, "heads_num": 2, "layers_num": 1,
        "max_seq_length": 32, "target": ["mlm"], "tie_weights": True, "data_processor": "mlm"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalmlm")
    with open(os.path.join(ROOT, "corpora", "moby_dick.txt"), encoding="utf-8") as f:
        lines = [next(f) for _ in range(30)]
    (d / "corpus.txt").write_text("".join(lines), encoding="utf-8")
    preprocess(PreprocessOptions(corpus_path=str(d / "corpus.txt"), dataset_path=str(d / "eval.tpd"),
                                 data_processor="mlm", seq_length=32, full_sentences=True, dynamic_masking=True,
                                 dup_factor=1), log=open(os.devnull, "w"))
    torch.manual_seed(0)
    cfg = load_model_config(None, {**TINY, "vocab_size": 30522})
    model = build_model(cfg)
    save_state_dict(model.state_dict(), str(d / "model.bin"))
    cfg.save(str(d / "config.json"))
    return d


def test_mlm_accuracy_is_deterministic_and_matches_the_models_own_metric(files):
    model = load_model(str(files / "config.json"), str(files / "model.bin"))
    a = mlm_accuracy(model, str(files / "eval.tpd"), batch_size=8, seed=7)
    b = mlm_accuracy(load_model(str(files / "config.json"), str(files / "model.bin")), str(files / "eval.tpd"),
                     batch_size=5, seed=7)  # another batching: the same masks, the same answer
    assert a["mlm_acc"] == b["mlm_acc"] and a["predictions"] == b["predictions"]
    assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-5)
    # the same number the model's own forward reports over the same batches
    loader = DataLoader(str(files / "eval.tpd"), 8, seed=7, shuffle=False)
    correct = count = 0
    with torch.no_grad():
        for start in range(0, loader.instances_num, 8):
            out = model(loader.collate(range(start, min(start + 8, loader.instances_num))))
            correct += float(out.metrics["mlm_acc"][0])
            count += out.metrics["mlm_acc"][1]
    assert a["predictions"] == count > 50
    assert a["mlm_acc"] == pytest.approx(correct / count)
    assert a["instances"] == loader.instances_num
    other = mlm_accuracy(model, str(files / "eval.tpd"), batch_size=8, seed=8)
    assert other["mlm_loss"] != a["mlm_loss"]  # the seed picks the masks
    capped = mlm_accuracy(model, str(files / "eval.tpd"), batch_size=8, seed=7, max_instances=3)
    assert capped["instances"] == 3 and capped["predictions"] < a["predictions"]


def test_cli_prints_and_writes_the_same_number(files, repo_root):
    out = subprocess.run([sys.executable, os.path.join(repo_root, "scripts", "evaluate_mlm.py"),
                          "--load_model_path", str(files / "model.bin"), "--config_path", str(files / "config.json"),
                          "--dataset_path", str(files / "eval.tpd"), "--output_path", str(files / "r.json")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads((files / "r.json").read_text())
    assert f"MLM accuracy {result['mlm_acc']:.4f}" in out.stdout
    model = load_model(str(files / "config.json"), str(files / "model.bin"))
    assert result["mlm_acc"] == mlm_accuracy(model, str(files / "eval.tpd"))["mlm_acc"]


def test_count_parameters_counts_tied_tables_once():
    cfg = load_model_config(None, {**TINY, "vocab_size": 100})
    model = build_model(cfg)
    emb = 100 * 16 + 32 * 16 + 3 * 16 + 2 * 16
    layer = 4 * (16 * 16 + 16) + (16 * 32 + 32) + (32 * 16 + 16) + 2 * 2 * 16
    assert count_parameters(model) == emb + layer
    head = 16 * 16 + 16 + 2 * 16 + 100  # linear_1, layer norm, decoder bias (decoder weight = word table)
    assert count_parameters(model, None) == emb + layer + head


def test_measure_latency_reports_every_model_and_batch_size():
    models = {n: build_model(load_model_config(None, {**TINY, "vocab_size": 2000, "hidden_size": h, "emb_size": h}))
              for n, h in (("big", 32), ("small", 16))}
    threads = torch.get_num_threads()
    ms = measure_latency(models, batch_sizes=(1, 4), seq_length=16, threads=1, repeats=3, warmup=1)
    assert set(ms) == {"big", "small"} and all(set(v) == {1, 4} for v in ms.values())
    assert all(t > 0 for v in ms.values() for t in v.values())
    assert torch.get_num_threads() == threads  # restored
