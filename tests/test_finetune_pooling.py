"""--pooling first|mean|max|last: the vectors, the config key, and inference reusing the training pooling."""
import json
import os

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.classification import classifier_infer_main, classifier_main
from tencentpretrain.tasks.heads import Classifier, pool

TINY_CONFIG = os.path.join(repo_root(), "models", "bert", "tiny_config.json")
VOCAB = ["--vocab_path", os.path.join(repo_root(), "datasets", "samples", "vocab.txt"), "--device", "cpu"]
FAST = ["--batch_size", "4", "--seq_length", "32", "--epochs_num", "1", "--report_steps", "100", "--layers_num", "1"]
TRAIN = os.path.join(repo_root(), "datasets", "samples", "tsv", "single_train.tsv")
TEST = os.path.join(repo_root(), "datasets", "samples", "tsv", "single_test.tsv")

SEG = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 2, 2, 0], [1, 2, 2, 2, 2]])
LENGTHS = [3, 4, 5]


def _hidden():
    hidden = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    return hidden.masked_fill((SEG == 0)[..., None], 100.0)  # padding that would win max and skew mean


def _manual(hidden, kind):
    rows = []
    for i, n in enumerate(LENGTHS):
        real = hidden[i, :n]
        rows.append({"first": real[0], "mean": real.sum(0) / n, "max": real.max(0).values, "last": real[n - 1]}[kind])
    return torch.stack(rows)


@pytest.mark.parametrize("kind", ["first", "mean", "max", "last"])
def test_pool_matches_a_manual_computation_over_the_non_padding_tokens(kind):
    hidden = _hidden()
    got = pool(hidden, SEG, kind)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, _manual(hidden, kind), rtol=0, atol=1e-6)
    assert float(got.max()) < 50.0  # padding (100.0) never leaks in


def test_pool_kinds_differ_and_unknown_is_refused():
    hidden = _hidden()
    outs = {k: pool(hidden, SEG, k) for k in ("first", "mean", "max", "last")}
    assert all(not torch.allclose(outs[a], outs[b]) for a in outs for b in outs if a < b)
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        pool(hidden, SEG, "sum")


def test_classifier_head_reads_the_pooled_vector():
    cfg = load_model_config(TINY_CONFIG, {"layers_num": 1, "vocab_size": 50, "pooling": "mean"})
    model = Classifier(cfg, 3).eval()
    src = torch.tensor([[2, 7, 9, 0, 0], [2, 5, 6, 8, 0], [2, 4, 4, 4, 3]])
    with torch.no_grad():
        hidden = model.encoder(model.embedding(src, SEG), SEG)
        manual = model.output_layer_2(torch.tanh(model.output_layer_1(_manual(hidden, "mean"))))
        torch.testing.assert_close(model(src, SEG), manual, rtol=0, atol=1e-5)
        model.pooling = "first"
        assert not torch.allclose(model(src, SEG), manual, atol=1e-3)


def test_regression_scores_stay_fp32_under_bf16_autocast():
    """A bf16 score keeps ~3 significant digits: close scores would tie and a correlation would read 0.
    The regression head's last projection runs in fp32; a classifier's logits stay under autocast."""
    cfg = load_model_config(TINY_CONFIG, {"layers_num": 1, "vocab_size": 50})
    torch.manual_seed(0)
    regressor, classifier = Classifier(cfg, 1).eval(), Classifier(cfg, 3).eval()
    with torch.no_grad():  # scores near 2.5 apart by ~1e-3: bf16's step there is 2^-6
        regressor.output_layer_2.weight.mul_(1e-3)
        regressor.output_layer_2.bias.fill_(2.5)
    src = torch.tensor([[2, 7, 9, 0, 0], [2, 5, 6, 8, 0], [2, 4, 4, 4, 3]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = regressor(src, SEG)
        pooled = torch.tanh(regressor.output_layer_1(_manual(regressor.encoder(regressor.embedding(src, SEG), SEG),
                                                             "first")))
        assert classifier(src, SEG).dtype == torch.bfloat16
    assert scores.dtype == torch.float32 and scores.shape == (3, 1)
    assert len(set(scores.squeeze(-1).tolist())) == 3  # no ties
    torch.testing.assert_close(scores, regressor.output_layer_2(pooled.float()).detach(), rtol=0, atol=1e-6)
    assert len(set(scores.to(torch.bfloat16).squeeze(-1).tolist())) < 3  # what bf16 scores would have been

@pytest.fixture(scope="module")
def mean_model(tmp_path_factory):
    """A classifier fine-tuned with "pooling": "mean" from its config file (no --pooling flag)."""
    d = tmp_path_factory.mktemp("pool")
    config = json.load(open(TINY_CONFIG, encoding="utf-8"))
    config["pooling"] = "mean"
    (d / "mean_config_in.json").write_text(json.dumps(config), encoding="utf-8")
    model = str(d / "clf.bin")
    classifier_main(["--config_path", str(d / "mean_config_in.json"), *VOCAB, *FAST, "--train_path", TRAIN,
                     "--output_model_path", model])
    return d, model


def test_config_pooling_is_used_and_recorded(mean_model):
    d, _ = mean_model
    assert json.loads((d / "clf_config.json").read_text())["pooling"] == "mean"
    assert json.loads((d / "clf_config.json").read_text())["labels_num"] == 2


def test_cli_pooling_beats_the_config(mean_model, tmp_path, capsys):
    d, _ = mean_model
    classifier_main(["--config_path", str(d / "mean_config_in.json"), *VOCAB, *FAST, "--train_path", TRAIN,
                     "--pooling", "max", "--output_model_path", str(tmp_path / "m.bin")])
    assert "pooling: max" in capsys.readouterr().out
    assert json.loads((tmp_path / "m_config.json").read_text())["pooling"] == "max"


def _infer(model, pred, *extra):
    classifier_infer_main([*VOCAB, "--load_model_path", model, "--test_path", TEST, "--seq_length", "32",
                           "--prediction_path", str(pred), "--output_logits", *extra])
    return [r.split("\t")[1] for r in pred.read_text().splitlines()[1:]]


def test_inference_uses_the_recorded_pooling_and_refuses_another(mean_model, tmp_path, capsys):
    d, model = mean_model
    recorded = _infer(model, tmp_path / "p.tsv")  # no --config_path: the one beside the model
    out = capsys.readouterr().out
    assert f"model config: {d / 'clf_config.json'}" in out and "pooling: mean (recorded in" in out
    assert _infer(model, tmp_path / "p.tsv", "--pooling", "mean") == recorded
    with pytest.raises(UserError, match=r"clf.bin was fine-tuned with pooling 'mean' \(recorded in .*clf_config.json\)"
                                        r", but --pooling asks for 'first'; drop it or pass --pooling mean"):
        _infer(model, tmp_path / "p.tsv", "--pooling", "first")
    with pytest.raises(UserError, match=r"but \"pooling\" in .*tiny_config.json asks for 'first'"):
        config = json.load(open(TINY_CONFIG, encoding="utf-8"))
        config["pooling"] = "first"
        (tmp_path / "tiny_config.json").write_text(json.dumps(config))
        _infer(model, tmp_path / "p.tsv", "--config_path", str(tmp_path / "tiny_config.json"), "--layers_num", "1")


def test_without_a_record_inference_pools_as_told(mean_model, tmp_path, capsys):
    """A model with no config beside it (e.g. from TencentPretrain): --pooling or the config decide."""
    d, model = mean_model
    recorded = _infer(model, tmp_path / "p.tsv")
    bare = tmp_path / "bare.bin"
    bare.write_bytes(open(model, "rb").read())
    conf = ["--config_path", TINY_CONFIG, "--layers_num", "1"]
    assert _infer(str(bare), tmp_path / "q.tsv", *conf, "--pooling", "mean") == recorded
    assert "pooling: mean (from --pooling; no " in capsys.readouterr().out
    assert _infer(str(bare), tmp_path / "q.tsv", *conf) != recorded  # default first: other logits
    assert "pooling: first (from the default; no " in capsys.readouterr().out
