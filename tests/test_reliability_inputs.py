"""Bad fine-tuning data, bad converter inputs and bad files: one `error:` line and exit 2 (nothing written),
or a `warning:` line naming the file, the lines and the count, never a traceback or a silently wrong model."""
import json
import os
import struct

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.convert.hf_files import convert_tencentpretrain_to_hf, export_main, import_main
from tencentpretrain.errors import UserError, run_cli
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_state_dict_file, save_state_dict
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks import glue
from tencentpretrain.tasks.classification import classifier_infer_main, classifier_main, regression_main
from tencentpretrain.tasks.engine import RunConfig, fit, pick_device
from tencentpretrain.tasks.ner import ner_main
from tencentpretrain.tasks.squad import read_squad, squad_main

ROOT = repo_root()
SAMPLES = os.path.join(ROOT, "datasets", "samples")
VOCAB = os.path.join(SAMPLES, "vocab.txt")
TINY = ["--config_path", os.path.join(ROOT, "models", "bert", "tiny_config.json"), "--layers_num", "1",
        "--vocab_path", VOCAB, "--batch_size", "4", "--seq_length", "32", "--learning_rate", "1e-3",
        "--report_steps", "1", "--device", "cpu", "--epochs_num", "1"]
quiet = lambda *a, **k: None  # noqa: E731


def fails(main, argv, capsys):
    """Run a command line under run_cli; it must exit 2 with one `error:` line. Returns that line."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


def tsv(path, header, *rows):
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n", encoding="utf-8")
    return path


PAIRS = [("A man plays a guitar .", "A man plays music ."), ("A dog runs .", "A man reads ."),
         ("Kids play outside .", "Children are outside ."), ("A woman cooks .", "The soup is hot .")]


# ---------------------------------------------------------------- labels
@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "1e400"])
def test_non_finite_regression_label_is_an_error_naming_file_and_line(tmp_path, capsys, bad):
    train = tsv(tmp_path / "train.tsv", ["label", "text_a", "text_b"], ("1.5", *PAIRS[0]), (bad, *PAIRS[1]),
                ("0.5", *PAIRS[2]))
    model = tmp_path / "m.bin"
    err = fails(regression_main, TINY + ["--train_path", train, "--output_model_path", model], capsys)
    assert f"{train}, line 3: label '{bad}' is not a finite number" in err
    assert not model.exists() and not (tmp_path / "m_config.json").exists()


def test_non_finite_dev_score_is_refused_before_training(tmp_path, capsys):
    train = tsv(tmp_path / "train.tsv", ["label", "text_a", "text_b"], *[("2.0", *p) for p in PAIRS])
    dev = tsv(tmp_path / "dev.tsv", ["label", "text_a", "text_b"], ("1.0", *PAIRS[0]), ("nan", *PAIRS[1]))
    err = fails(regression_main, TINY + ["--train_path", train, "--dev_path", dev,
                                         "--output_model_path", tmp_path / "m.bin"], capsys)
    assert f"{dev}, line 3: label 'nan'" in err
    assert "training on" not in capsys.readouterr().out and not (tmp_path / "m.bin").exists()


def test_dev_labels_unseen_in_training_are_a_warning_with_count_and_lines(tmp_path, capsys):
    train = tsv(tmp_path / "train.tsv", ["label", "text_a"], ("0", "good ."), ("2", "bad ."), ("0", "fine ."))
    dev = tsv(tmp_path / "dev.tsv", ["label", "text_a"], ("1", "good ."), ("2", "bad ."), ("1", "so so ."))
    model = tmp_path / "m.bin"
    assert classifier_main(TINY + ["--train_path", str(train), "--dev_path", str(dev),
                                   "--output_model_path", str(model)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {train}: no training example has label 1 (of 0..2)" in out
    assert (f"warning: {dev}: 2 of 3 examples (lines 2, 4) have labels never seen in training ({train}): 1;"
            in out)
    assert model.exists()


def test_dev_label_outside_the_head_is_an_error(tmp_path, capsys):
    train = tsv(tmp_path / "train.tsv", ["label", "text_a"], ("0", "good ."), ("1", "bad ."))
    dev = tsv(tmp_path / "dev.tsv", ["label", "text_a"], ("1", "good ."), ("5", "odd ."))
    err = fails(classifier_main, TINY + ["--train_path", train, "--dev_path", dev,
                                         "--output_model_path", tmp_path / "m.bin"], capsys)
    assert f"{dev}, line 3: label 5 is out of range for 2 labels" in err
    assert not (tmp_path / "m.bin").exists()


def test_ner_dev_tags_unseen_in_training_are_a_warning(tmp_path, capsys):
    l2i = tmp_path / "l2i.json"
    l2i.write_text(json.dumps({"O": 0, "B-LOC": 1, "I-LOC": 2, "B-PER": 3}))
    train = tsv(tmp_path / "train.tsv", ["text_a", "label"], ("a b c", "O B-LOC I-LOC"), ("d e", "O O"))
    dev = tsv(tmp_path / "dev.tsv", ["text_a", "label"], ("a b", "B-PER O"), ("c", "O"))
    assert ner_main(TINY + ["--train_path", str(train), "--dev_path", str(dev), "--label2id_path", str(l2i),
                            "--output_model_path", str(tmp_path / "n.bin")]) == 0
    assert (f"warning: {dev}: 1 of 2 examples (lines 2) have tags never seen in training ({train}): B-PER"
            in capsys.readouterr().out)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A 2-label classifier fine-tuned on a few lines (its path)."""
    tmp = tmp_path_factory.mktemp("cls")
    train = tsv(tmp / "train.tsv", ["label", "text_a"], ("1", "good ."), ("0", "bad ."), ("1", "nice ."))
    model = tmp / "c.bin"
    assert classifier_main(TINY + ["--train_path", str(train), "--output_model_path", str(model)]) == 0
    return model


def test_inference_labels_the_model_cannot_produce_are_a_warning_with_counts(classifier, tmp_path, capsys):
    test = tsv(tmp_path / "test.tsv", ["label", "text_a"], ("1", "good ."), ("4", "odd ."), ("7", "odd ."))
    pred = tmp_path / "pred.tsv"
    assert classifier_infer_main(["--vocab_path", VOCAB, "--load_model_path", str(classifier), "--test_path",
                                  str(test), "--prediction_path", str(pred), "--seq_length", "32"]) == 0
    out = capsys.readouterr().out
    assert (f"warning: {test}: 2 of 3 examples (lines 3, 4) have labels the model cannot produce (its head has 2): "
            "4, 7; they count as errors" in out)
    assert len(pred.read_text().splitlines()) == 4


# ---------------------------------------------------------------- too short, no text
@pytest.mark.parametrize("seq_length, pair, least", [(1, False, 3), (2, False, 3), (3, True, 4)])
def test_seq_length_without_room_for_text_is_an_error(tmp_path, capsys, seq_length, pair, least):
    header = ["label", "text_a", "text_b"] if pair else ["label", "text_a"]
    rows = [(str(i % 2), *p) if pair else (str(i % 2), p[0]) for i, p in enumerate(PAIRS)]
    train = tsv(tmp_path / "train.tsv", header, *rows)
    err = fails(classifier_main, TINY + ["--train_path", train, "--seq_length", seq_length,
                                         "--output_model_path", tmp_path / "m.bin"], capsys)
    assert f"--seq_length {seq_length} leaves no room for text" in err and f"use at least {least}" in err
    assert not (tmp_path / "m.bin").exists()


def test_inference_with_seq_length_1_is_an_error(classifier, tmp_path, capsys):
    test = tsv(tmp_path / "test.tsv", ["text_a"], ("good .",))
    err = fails(classifier_infer_main, ["--vocab_path", VOCAB, "--load_model_path", classifier, "--test_path",
                                        test, "--prediction_path", tmp_path / "p.tsv", "--seq_length", "1"], capsys)
    assert "--seq_length 1 leaves no room for text" in err and not (tmp_path / "p.tsv").exists()


def test_examples_without_text_tokens_are_a_warning_with_counts(tmp_path, capsys):
    train = tsv(tmp_path / "train.tsv", ["label", "text_a"], ("0", ""), ("1", "   "), ("0", "good film ."))
    assert classifier_main(TINY + ["--train_path", str(train), "--output_model_path", str(tmp_path / "m.bin")]) == 0
    assert (f"warning: {train}: 2 of 3 examples (lines 2, 3) have no text tokens" in capsys.readouterr().out)


# ---------------------------------------------------------------- SQuAD
def _squad(path, qas_per_paragraph, context="The cat sat on the mat ."):
    paragraphs = [{"context": context, "qas": [{"id": qid, "question": "Where did the cat sit ?",
                                               "answers": [{"text": "the mat", "answer_start": 15}]}
                                              for qid in ids]} for ids in qas_per_paragraph]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def test_duplicate_squad_question_ids_are_an_error_naming_both_places(tmp_path, capsys):
    path = _squad(tmp_path / "dup.json", [["a", "b", "c"], ["d", "b", "e"]])
    err = fails(squad_main, TINY + ["--train_path", path, "--output_model_path", tmp_path / "s.bin"], capsys)
    assert (f"{path}: data[0].paragraphs[1].qas[1]: question id 'b' is used twice (first at "
            "data[0].paragraphs[0].qas[1])") in err
    assert not (tmp_path / "s.bin").exists()


def test_squad_questions_with_an_empty_context_are_a_warning(tmp_path, capsys):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"paragraphs": [
        {"context": "", "qas": [{"id": "x", "question": "Why ?", "answers": [], "is_impossible": True}]},
        {"context": "The cat sat on the mat .", "qas": [
            {"id": "y", "question": "Where ?", "answers": [{"text": "the mat", "answer_start": 15}]}]}]}]}))
    assert squad_main(TINY + ["--train_path", str(path), "--output_model_path", str(tmp_path / "s.bin"),
                              "--seq_length", "64"]) == 0
    assert f"warning: {path}: 1 of 2 questions have an empty context (ids x)" in capsys.readouterr().out


@pytest.mark.parametrize("data, where, message", [
    (["x"], "data[0]", "an article must be a JSON object, got \"x\""),
    ([{"paragraphs": "p"}], "data[0]", "'paragraphs' must be a JSON list"),
    ([{"paragraphs": [{"context": 5, "qas": []}]}], "data[0].paragraphs[0]", "'context' must be a string, got 5"),
    ([{"paragraphs": [{"context": "c", "qas": ["q"]}]}], "data[0].paragraphs[0].qas[0]",
     "a question must be a JSON object"),
    ([{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": None}]}]}], "data[0].paragraphs[0].qas[0]",
     "'question' must be a string, got null"),
    ([{"paragraphs": [{"context": "c", "qas": [{"id": ["1"], "question": "q"}]}]}], "data[0].paragraphs[0].qas[0]",
     "'id' must be a string or an integer"),
    ([{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q", "answers": {"text": "c"}}]}]}],
     "data[0].paragraphs[0].qas[0]", "'answers' must be a JSON list"),
    ([{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q",
                                                 "answers": [{"text": 5, "answer_start": 0}]}]}]}],
     "data[0].paragraphs[0].qas[0].answers[0]", "'text' must be a string"),
    ([{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q",
                                                 "answers": [{"text": "c", "answer_start": "x"}]}]}]}],
     "data[0].paragraphs[0].qas[0].answers[0]", "'answer_start' must be an integer"),
])
def test_malformed_squad_structure_is_an_error_naming_where(tmp_path, data, where, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": data}))
    with pytest.raises(UserError) as err:
        read_squad(str(path))
    assert str(err.value).startswith(f"{path}: {where}: {message}"), str(err.value)


def test_squad_answer_start_written_as_digits_is_read(tmp_path):
    path = _squad(tmp_path / "s.json", [["a"]])
    obj = json.loads(path.read_text())
    obj["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = "15"
    path.write_text(json.dumps(obj))
    assert read_squad(str(path))[0][0].answers == [("the mat", 15)]


# ---------------------------------------------------------------- a non-finite loss
class _Task:
    """loss(): a finite value, then nan from the `nan_from`-th call on; evaluate(): a rising score."""

    def __init__(self, nan_from):
        self.calls, self.nan_from, self.epoch = 0, nan_from, 0

    def loss(self, model, batch):
        self.calls += 1
        loss = model(batch["src"]).pow(2).mean()
        return loss * float("nan") if self.calls >= self.nan_from else loss

    def evaluate(self, model, data, run):
        self.epoch += 1
        return {"score": float(self.epoch)}


def test_non_finite_loss_stops_and_keeps_the_best_model_so_far(tmp_path):
    torch.manual_seed(0)
    model, path = torch.nn.Linear(3, 1), tmp_path / "best.bin"
    data = {"src": torch.randn(8, 3)}
    run = RunConfig(epochs_num=3, batch_size=4, learning_rate=1e-2, report_steps=100)
    with pytest.raises(UserError) as err:
        fit(model, _Task(nan_from=4), data, [("dev", None)], run, str(path), log=quiet)
    assert str(err.value).startswith(f"the training loss became nan at epoch 2, step 4; training stopped and "
                                     f"{path} holds the best model so far (epoch 1)")
    saved = torch.load(path, weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_non_finite_loss_from_nan_weights_saves_nothing(tmp_path, capsys):
    cfg = load_model_config(os.path.join(ROOT, "models", "bert", "tiny_config.json"),
                            {"layers_num": 1, "vocab_size": 345})
    sd = build_model(cfg).state_dict()
    sd["embedding.layer_norm.gamma"] = torch.full_like(sd["embedding.layer_norm.gamma"], float("nan"))
    save_state_dict(sd, str(tmp_path / "nan.bin"))
    train = tsv(tmp_path / "train.tsv", ["label", "text_a"], ("0", "good ."), ("1", "bad ."))
    err = fails(classifier_main, TINY + ["--train_path", train, "--pretrained_model_path", tmp_path / "nan.bin",
                                         "--output_model_path", tmp_path / "m.bin"], capsys)
    assert "the training loss became nan at epoch 1, step 1; training stopped and no model was saved" in err
    assert "Lower --learning_rate (now 0.001)" in err
    assert not (tmp_path / "m.bin").exists() and not (tmp_path / "m_config.json").exists()


# ---------------------------------------------------------------- converters: config.json always matches its weights
def _tiny_bert(tmp_path, name, width, layernorm="normal_torch"):
    """Our BERT (MLM + NSP heads) `width` wide, its weights and config written to tmp_path."""
    cfg = load_model_config(os.path.join(ROOT, "models", "bert", "tiny_config.json"),
                            {"hidden_size": width, "emb_size": width, "feedforward_size": 4 * width, "heads_num": 2,
                             "layers_num": 1, "vocab_size": 60, "max_seq_length": 32, "layernorm": layernorm})
    torch.manual_seed(0)
    save_state_dict(build_model(cfg).state_dict(), str(tmp_path / f"{name}.bin"))
    cfg.save(str(tmp_path / f"{name}_cfg.json"))
    return tmp_path / f"{name}.bin", tmp_path / f"{name}_cfg.json"


@pytest.mark.parametrize("layernorm", ["normal_torch", "normal"])
def test_export_with_a_config_wider_than_the_weights_is_refused(tmp_path, capsys, layernorm):
    student, _ = _tiny_bert(tmp_path, "student", 24, layernorm)
    _, wide_cfg = _tiny_bert(tmp_path, "wide", 128, layernorm)
    out = tmp_path / "hf"
    err = fails(export_main, ["--input_model_path", student, "--config_path", wide_cfg,
                              "--output_model_path", out, "--force"], capsys)
    assert f"error: {wide_cfg} does not match the weights of {student}: hidden_size 128 in the config, 24 in " \
           "the weights (the word embedding table is [60, 24]); feedforward_size 512 in the config, 96 in " \
           "the weights" in err
    assert not out.exists()


def test_export_takes_table_sizes_from_the_weights_with_a_note(tmp_path):
    model, cfg_path = _tiny_bert(tmp_path, "m", 32)
    cfg = json.loads(cfg_path.read_text())
    cfg["max_seq_length"] = 512
    cfg_path.write_text(json.dumps(cfg))
    lines = []
    _, hf_cfg = convert_tencentpretrain_to_hf(str(model), str(cfg_path), str(tmp_path / "hf"), log=lines.append)
    assert f"note: max_seq_length 32 from the weights ({cfg_path} says 512)" in lines
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["max_position_embeddings"] == hf_cfg["max_position_embeddings"] == 32


def _hf_folder(tmp_path, **config_changes):
    model, cfg = _tiny_bert(tmp_path, "src", 32)
    folder = tmp_path / "hf"
    convert_tencentpretrain_to_hf(str(model), str(cfg), str(folder), log=quiet)
    hf_cfg = json.loads((folder / "config.json").read_text())
    hf_cfg.update(config_changes)
    (folder / "config.json").write_text(json.dumps(hf_cfg))
    return folder


@pytest.mark.parametrize("key, value, shown", [
    ("hidden_size", 256, "hidden_size 256 in the config, 32 in the weights (the word embedding table is [60, 32])"),
    ("intermediate_size", 64, "intermediate_size 64 in the config, 128 in the weights"),
    ("vocab_size", 30522, "vocab_size 30522 in the config, 60 in the weights"),
    ("max_position_embeddings", 512, "max_position_embeddings 512 in the config, 32 in the weights"),
])
def test_import_of_a_config_json_that_contradicts_its_weights_is_refused(tmp_path, capsys, key, value, shown):
    folder = _hf_folder(tmp_path, **{key: value})
    out = tmp_path / "ours.bin"
    err = fails(import_main, ["--input_model_path", folder, "--output_model_path", out], capsys)
    assert f"{folder / 'config.json'} does not match the weights of {folder}: {shown}" in err
    assert not out.exists() and not (tmp_path / "ours_config.json").exists()


@pytest.mark.parametrize("config, message", [
    ([1], "expected a JSON object (a BertConfig), got list"),
    ({"model_type": "bert"}, "no hidden_size, intermediate_size"),
    ("hidden_size_as_text", "hidden_size is '32'; sizes are positive integers"),
])
def test_import_of_a_malformed_config_json_is_refused(tmp_path, capsys, config, message):
    folder = _hf_folder(tmp_path)
    if config == "hidden_size_as_text":
        config = {**json.loads((folder / "config.json").read_text()), "hidden_size": "32"}
    (folder / "config.json").write_text(json.dumps(config))
    err = fails(import_main, ["--input_model_path", folder, "--output_model_path", tmp_path / "o.bin"], capsys)
    assert f"{folder / 'config.json'}: {message}" in err and not (tmp_path / "o.bin").exists()


@pytest.mark.parametrize("index", ["[]", "{}", '{"weight_map": {"a": 3}}'])
def test_import_of_a_malformed_shard_index_is_refused(tmp_path, capsys, index):
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(index)
    err = fails(import_main, ["--input_model_path", folder, "--output_model_path", tmp_path / "o.bin"], capsys)
    assert "model.safetensors.index.json: expected a sharded-weights index" in err


def test_export_refuses_an_output_file_where_a_folder_goes_and_a_missing_vocab(tmp_path, capsys):
    model, cfg = _tiny_bert(tmp_path, "m", 32)
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = fails(export_main, ["--input_model_path", model, "--config_path", cfg, "--output_model_path", afile], capsys)
    assert f"--output_model_path {afile} is a file; give a folder" in err and afile.read_text() == "x"
    err = fails(export_main, ["--input_model_path", model, "--config_path", cfg, "--output_model_path",
                              tmp_path / "hf", "--vocab_path", tmp_path / "none.txt"], capsys)
    assert "--vocab_path" in err and "does not exist" in err and not (tmp_path / "hf").exists()


# ---------------------------------------------------------------- damaged .safetensors
def _damaged(tmp_path, kind):
    from safetensors.torch import save
    raw = save({"a": torch.zeros(3)})
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["a"]["data_offsets"] = [0, 400]
    bad_header = json.dumps(header).encode()
    data = {"garbage": b"not a safetensors file", "empty": b"", "truncated": raw[:-4],
            "bad_json": struct.pack("<Q", 5) + b"{abc}",
            "bad_offsets": struct.pack("<Q", len(bad_header)) + bad_header + raw[8 + n:]}[kind]
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "bad_json", "bad_offsets"])
def test_damaged_safetensors_is_an_error_naming_the_file(tmp_path, kind):
    pytest.importorskip("safetensors")
    path = _damaged(tmp_path, kind)
    with pytest.raises(UserError) as err:
        load_state_dict_file(str(path))
    assert str(err.value).startswith(f"{path}: not a readable .safetensors file (")


def test_import_of_a_folder_with_damaged_safetensors_exits_2(tmp_path, capsys):
    pytest.importorskip("safetensors")
    path = _damaged(tmp_path, "truncated")
    err = fails(import_main, ["--input_model_path", tmp_path, "--output_model_path", tmp_path / "o.bin"], capsys)
    assert f"error: {path}: not a readable .safetensors file" in err and not (tmp_path / "o.bin").exists()


# ---------------------------------------------------------------- glue_to_tsv and --device
def test_glue_to_tsv_bad_inputs(tmp_path, capsys):
    stsb, cola, afile = tmp_path / "stsb", tmp_path / "cola", tmp_path / "afile"
    stsb.mkdir()
    cola.mkdir()
    (stsb / "train.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1.0\nc\td\tnan\n")
    (cola / "train.tsv").write_text("x\t1\n")
    afile.write_text("x")
    err = fails(glue.main, ["--task", "STS-B", "--input_dir", stsb, "--output_dir", tmp_path / "o1"], capsys)
    assert f"{stsb / 'train.tsv'}, line 3: score 'nan' is not a finite number" in err
    assert not (tmp_path / "o1" / "train.tsv").exists()
    err = fails(glue.main, ["--task", "CoLA", "--input_dir", cola, "--output_dir", tmp_path / "o2"], capsys)
    assert f"{cola / 'train.tsv'}, line 1: no 'sentence' header, and 2 fields are too few" in err
    err = fails(glue.main, ["--task", "SST-2", "--input_dir", os.path.join(SAMPLES, "glue", "SST-2"),
                            "--output_dir", afile], capsys)
    assert f"--output_dir {afile} is a file" in err and afile.read_text() == "x"


def test_bad_device_is_an_error():
    with pytest.raises(UserError, match="--device 'bogus' is not a device name"):
        pick_device("bogus")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(UserError, match=f"--device cuda:{count}: this machine has"):
        pick_device(f"cuda:{count}")
    assert pick_device("cpu") == "cpu"
