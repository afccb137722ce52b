"""Fine-tuning tasks are registered objects: a toy task defined here runs through both command lines.

The toy task ("starts_with_the": does the sentence begin with "the"?) is the whole of what a new task
writes: a Task subclass with its reader, encoding, head, loss, metric and prediction writer.
"""
import os
import re

import pytest
import torch
import torch.nn.functional as F

from tencentpretrain.errors import UserError
from tencentpretrain.model_io import load_state_dict_file
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.base import TASKS, Task, get_task, register_task
from tencentpretrain.tasks.classification import encode
from tencentpretrain.tasks.cli import finetune_main, infer_main
from tencentpretrain.tasks.engine import forward_all
from tencentpretrain.tasks.heads import Classifier
from tencentpretrain.tasks.readers import Example, read_tsv_rows

ROOT = repo_root()
TINY = ["--config_path", os.path.join(ROOT, "models", "bert", "tiny_config.json"), "--layers_num", "1",
        "--vocab_path", os.path.join(ROOT, "datasets", "samples", "vocab.txt"), "--device", "cpu"]
FAST = ["--batch_size", "4", "--seq_length", "16", "--epochs_num", "2", "--learning_rate", "1e-3",
        "--report_steps", "1"]
SENTENCES = ["the soup was warm .", "a man is playing a guitar .", "the staff were kind .", "i will never stay .",
             "the ending made me smile .", "a tedious film .", "the day was cold .", "i would stay here again ."]


@register_task("starts_with_the")
class StartsWithThe(Task):
    train_description = "Fine-tune the toy task."

    def read(self, path, labelled=True):
        return [Example(row["text_a"], line=n) for n, row in read_tsv_rows(path)]

    def encode(self, examples, tokenizer, seq_length, path, training=False):
        tensors = encode(examples, tokenizer, seq_length)
        tensors["label"] = torch.tensor([int(ex.text_a.split()[0] == "the") for ex in examples])
        return tensors

    def build_model(self, cfg):
        return Classifier(cfg, 2)

    def model_from_checkpoint(self, cfg, state_dict, args):
        return Classifier(cfg, 2)

    def loss(self, model, batch):
        return F.cross_entropy(model(batch["src"], batch["seg"]).float(), batch["label"])

    def predict(self, model, tensors, run):
        (logits,) = forward_all(model, tensors, run)
        return logits.argmax(-1)

    def evaluate(self, model, tensors, run):
        return M.classification_metrics(self.predict(model, tensors, run).tolist(), tensors["label"].tolist())

    def write_predictions(self, tensors, preds):
        with open(self.args.prediction_path, "w", encoding="utf-8") as f:
            f.write("".join(f"{p}\n" for p in preds.tolist()))
        return f"{len(preds)} toy predictions written"


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "toy.tsv"
    path.write_text("text_a\n" + "".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    return str(path)


def test_registry_names_the_builtin_tasks_and_refuses_clashes():
    assert get_task("starts_with_the") is StartsWithThe and StartsWithThe.name == "starts_with_the"
    for name in ("classification", "regression", "multi_label", "ner", "squad"):
        assert get_task(name).name == name
    assert get_task(StartsWithThe) is StartsWithThe
    with pytest.raises(ValueError, match="task 'ner' is registered twice"):
        register_task("ner")(type("Other", (Task,), {}))
    assert TASKS["ner"].__name__ == "TaggingTask"
    with pytest.raises(UserError, match=r"unknown fine-tuning task 'nope'; choose one of: classification, "
                                        r"multi_label, ner, regression, squad"):
        get_task("nope")


def test_a_new_task_runs_through_the_engine_and_both_command_lines(data, tmp_path, capsys):
    def train(folder, seed):
        model = str(tmp_path / folder / "model.bin")
        assert finetune_main("starts_with_the", TINY + FAST + ["--train_path", data, "--dev_path", data,
                                                               "--seed", str(seed), "--output_model_path", model]) == 0
        return model

    model = train("a", 3)
    out = capsys.readouterr().out
    assert re.search(r"^epoch 2 toy: acc \d\.\d{4}", out, re.M), out
    assert "done: 4 steps" in out and f"model config written to {tmp_path / 'a' / 'model_config.json'}" in out
    weights = load_state_dict_file(model)
    assert weights["output_layer_2.weight"].shape == (2, 128)
    # Same --seed, same model; another seed, another model: the shared seeding reaches the new task.
    assert torch.equal(weights["output_layer_2.weight"], load_state_dict_file(train("b", 3))["output_layer_2.weight"])
    assert not torch.equal(weights["output_layer_2.weight"],
                           load_state_dict_file(train("c", 4))["output_layer_2.weight"])

    pred = tmp_path / "pred.txt"
    assert infer_main("starts_with_the", TINY + ["--seq_length", "16", "--load_model_path", model,
                                                 "--test_path", data, "--prediction_path", str(pred)]) == 0
    assert capsys.readouterr().out.strip().endswith("8 toy predictions written")
    assert len(pred.read_text().split()) == 8 and set(pred.read_text().split()) <= {"0", "1"}


def test_shared_flags_are_checked_for_every_task(data):
    with pytest.raises(UserError, match="--epochs_num must be at least 1, got 0"):
        finetune_main("starts_with_the", TINY + ["--train_path", data, "--epochs_num", "0"])
