"""Same command, same --seed: byte-identical fine-tuned models and predictions (CPU).

Each task is fine-tuned twice into separate folders (same file names), then each model
predicts the same file. A third run with another --seed must give another model, so the
comparison can fail. Dropout (0.1 in the tiny config) and shuffling are both exercised.
The command lines also seed before building the model, which would hide a fit() that forgot
its own seeding; the last tests call fit() directly from fixed initial weights for that.
"""
import hashlib
import json
import os

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.classification import (ClassificationTask, classifier_infer_main, classifier_main,
                                                  regression_infer_main, regression_main)
from tencentpretrain.tasks.engine import RunConfig, fit
from tencentpretrain.tasks.heads import Classifier
from tencentpretrain.tasks.squad import squad_infer_main, squad_main

TINY = ["--config_path", os.path.join(repo_root(), "models", "bert", "tiny_config.json"), "--layers_num", "1",
        "--vocab_path", os.path.join(repo_root(), "datasets", "samples", "vocab.txt"), "--device", "cpu"]
FAST = ["--batch_size", "4", "--seq_length", "32", "--epochs_num", "1", "--learning_rate", "1e-3",
        "--report_steps", "100"]
SENTENCES = ["the soup was warm and the staff were kind .", "the soup was cold and the staff were rude .",
             "a delightful little film with a big heart .", "a tedious film that never finds its heart .",
             "i would happily stay here again .", "i will never stay here again .",
             "the ending made me smile for days .", "a man is playing a guitar ."]


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _classifier_data(d):
    rows = "".join(f"{i % 2}\t{s}\n" for i, s in enumerate(SENTENCES))
    return _write(d / "train.tsv", "label\ttext_a\n" + rows), _write(d / "test.tsv", "label\ttext_a\n" + rows)


def _regression_data(d):
    rows = "".join(f"{i * 0.6:.1f}\t{s}\t{SENTENCES[-1 - i]}\n" for i, s in enumerate(SENTENCES))
    return (_write(d / "train.tsv", "label\ttext_a\ttext_b\n" + rows),
            _write(d / "test.tsv", "text_a\ttext_b\n" + "".join(r.split("\t", 1)[1] for r in rows.splitlines(True))))


def _squad_data(d):
    context = "the soup was warm and the staff were kind . i would happily stay here again ."
    qas = [{"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
           for i, (q, a) in enumerate([("how was the soup ?", "warm"), ("who was kind ?", "the staff"),
                                       ("would i stay ?", "happily"), ("what was warm ?", "the soup"),
                                       ("stay where ?", "here")])]
    data = json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]})
    path = _write(d / "squad.json", data)
    return path, path


TASKS = {
    "classification": (classifier_main, classifier_infer_main, _classifier_data, [], "pred.tsv"),
    "regression": (regression_main, regression_infer_main, _regression_data, [], "pred.tsv"),
    "squad": (squad_main, squad_infer_main, _squad_data, ["--doc_stride", "8", "--max_query_length", "8"],
              "pred.json"),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_same_seed_same_model_and_predictions(task, tmp_path, capsys):
    train_main, infer_main, make_data, extra, pred_name = TASKS[task]
    train_path, test_path = make_data(tmp_path)

    def run(folder, seed):
        out = tmp_path / folder
        model = str(out / "model.bin")
        assert train_main(TINY + FAST + extra + ["--train_path", train_path, "--seed", str(seed),
                                                 "--output_model_path", model]) == 0
        pred = str(out / pred_name)
        assert infer_main(TINY + extra + ["--seq_length", "32", "--load_model_path", model,
                                          "--test_path", test_path, "--prediction_path", pred]) == 0
        return _sha(model), _sha(str(out / "model_config.json")), open(pred, encoding="utf-8").read()

    first, second, other = run("a", 11), run("b", 11), run("c", 12)
    assert "done: 2 steps" in capsys.readouterr().out  # 8 training rows, batches of 4: the optimizer moved
    assert first[0] == second[0], f"{task}: two runs with --seed 11 wrote different models"
    assert first[1] == second[1]
    assert first[2] == second[2] and first[2].strip(), f"{task}: predictions differ between identical runs"
    assert other[0] != first[0], f"{task}: --seed 12 gave the same model as --seed 11 (seed unused?)"


def test_two_processes_write_the_same_model(tmp_path):
    """Separate processes with different hash seeds: nothing may depend on set or dict-of-str order."""
    import subprocess
    import sys
    train_path, _ = _classifier_data(tmp_path)
    script = os.path.join(repo_root(), "finetune", "run_classifier.py")
    digests = []
    for folder, hash_seed in (("a", "1"), ("b", "2")):
        model = str(tmp_path / folder / "model.bin")
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
        res = subprocess.run([sys.executable, script, *TINY, *FAST, "--train_path", train_path,
                              "--output_model_path", model], capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        digests.append(_sha(model))
    assert digests[0] == digests[1]


# ---------------------------------------------------------------- fit() itself: its seed, not the caller's RNG
def _fit_from_the_same_start(seed, disturb, dropout):
    """Weights after engine.fit from fixed initial weights, with the global RNG moved by `disturb` first."""
    torch.manual_seed(0)
    model = Classifier(load_model_config(TINY[1], {"vocab_size": 40, "layers_num": 1, "dropout": dropout}), 2)
    g = torch.Generator().manual_seed(1)
    data = {"src": torch.randint(5, 40, (12, 6), generator=g), "seg": torch.ones(12, 6, dtype=torch.long),
            "label": torch.randint(0, 2, (12,), generator=g)}
    torch.manual_seed(disturb)  # whatever the caller drew before: fit() must not depend on it
    run = RunConfig(epochs_num=2, batch_size=3, learning_rate=1e-3, warmup=0.0, seed=seed)
    fit(model, ClassificationTask(), data, [], run, None, log=lambda msg: None)
    return model.state_dict()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_fit_seeds_dropout_itself():
    """Dropout 0.1 draws from the global RNG: fit() re-seeds it with run.seed, whatever came before."""
    first = _fit_from_the_same_start(seed=5, disturb=100, dropout=0.1)
    assert _same(first, _fit_from_the_same_start(seed=5, disturb=200, dropout=0.1))
    assert not _same(first, _fit_from_the_same_start(seed=6, disturb=100, dropout=0.1))


def test_fit_seed_drives_the_shuffling():
    """Without dropout only the batch order is random: another run.seed must give another order."""
    first = _fit_from_the_same_start(seed=5, disturb=100, dropout=0.0)
    assert _same(first, _fit_from_the_same_start(seed=5, disturb=100, dropout=0.0))
    assert not _same(first, _fit_from_the_same_start(seed=6, disturb=100, dropout=0.0))
