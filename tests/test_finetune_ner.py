"""NER (token tagging): span-level F1 by hand, readers' errors, and train -> infer end to end."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.metrics import bio_entities, span_f1
from tencentpretrain.tasks.ner import ner_infer_main, ner_main

ROOT = repo_root()
VOCAB = os.path.join(ROOT, "datasets", "samples", "vocab.txt")
TINY = ["--config_path", "models/bert/tiny_config.json", "--layers_num", "1", "--vocab_path", VOCAB]
FAST = ["--batch_size", "4", "--seq_length", "16", "--learning_rate", "1e-3", "--report_steps", "1",
        "--device", "cpu"]
L2I = {"O": 0, "B-ANI": 1, "I-ANI": 2, "B-LOC": 3, "I-LOC": 4}


# ---------------------------------------------------------------- span F1
def test_bio_entities_decoding():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "B-ORG", "I-ORG", "I-LOC", "O", "B-X"]
    assert bio_entities(tags) == {(0, 1, ("B-PER", "I-PER")), (4, 4, ("B-LOC",)),
                                  (5, 7, ("B-ORG", "I-ORG", "I-LOC")), (9, 9, ("B-X",))}
    assert bio_entities(["I-PER", "I-PER", "O"]) == set()  # I- without B- is no entity
    assert bio_entities(["B-A", "[PAD]", "I-A"]) == {(0, 0, ("B-A",))}


def test_span_f1_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"],      # PER(0,1), LOC(3,3)
            ["B-ORG", "I-ORG", "I-ORG", "O", "O"],      # ORG(0,2)
            ["O", "B-LOC", "I-LOC", "O", "B-PER"]]      # LOC(1,2), PER(4,4)
    pred = [["B-PER", "I-PER", "O", "B-PER", "O"],      # PER(0,1) right; (3,3) wrong type
            ["B-ORG", "I-ORG", "O", "O", "O"],          # partial overlap (0,1): wrong
            ["O", "I-LOC", "I-LOC", "O", "B-PER"]]      # I- without B-: nothing; PER(4,4) right
    s = span_f1(gold, pred)
    # 5 gold, 4 predicted, 2 correct: P = 1/2, R = 2/5, F1 = 2PR/(P+R) = 4/9.
    assert (s["gold_entities"], s["pred_entities"], s["correct"]) == (5, 4, 2)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.4)
    assert s["f1"] == pytest.approx(4 / 9)
    assert list(s)[0] == "f1"
    # An entity whose inner tag disagrees is wrong even with the same span.
    assert span_f1([["B-A", "I-A"]], [["B-A", "I-B"]])["correct"] == 0
    assert span_f1([["O", "O"]], [["O", "O"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0,
                                                 "gold_entities": 0, "pred_entities": 0, "correct": 0}
    assert span_f1(gold, gold)["f1"] == 1.0
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        span_f1([["O", "O"]], [["O"]])


# ---------------------------------------------------------------- data
ANIMALS, PLACES, OTHER = ["cat", "dog", "chef"], [["city", "castle"], ["everest"]], ["the", "day", "cold", "did"]


def _sentences(n, seed):
    import random
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        toks, tags = [], []
        for _ in range(rng.randint(2, 6)):
            r = rng.random()
            if r < 0.25:
                toks.append(rng.choice(ANIMALS)), tags.append("B-ANI")
            elif r < 0.45:
                place = rng.choice(PLACES)
                toks += place
                tags += ["B-LOC"] + ["I-LOC"] * (len(place) - 1)
            else:
                toks.append(rng.choice(OTHER)), tags.append("O")
        out.append((toks, tags))
    return out


def _write(path, rows, labelled=True):
    with open(path, "w", encoding="utf-8") as f:
        f.write("text_a\tlabel\n" if labelled else "text_a\n")
        for toks, tags in rows:
            f.write(" ".join(toks) + ("\t" + " ".join(tags) if labelled else "") + "\n")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner")
    (d / "label2id.json").write_text(json.dumps(L2I))
    test_rows = _sentences(6, 3) + [(["cat"] * 20, ["B-ANI"] * 20)]  # the last one is cut at --seq_length
    return {"dir": d, "l2i": str(d / "label2id.json"), "train": _write(d / "train.tsv", _sentences(24, 1)),
            "dev": _write(d / "dev.tsv", _sentences(8, 2)), "test": _write(d / "test.tsv", test_rows),
            "nolabel": _write(d / "test_nolabel.tsv", test_rows, labelled=False), "test_rows": test_rows}


def _train(data, model, extra=()):
    return ner_main(TINY + FAST + ["--train_path", data["train"], "--dev_path", data["dev"],
                                   "--label2id_path", data["l2i"], "--epochs_num", "2", "--seed", "3",
                                   "--output_model_path", model, *extra])


def _infer(data, model, pred, test="nolabel", extra=()):
    return ner_infer_main(TINY + ["--load_model_path", model, "--test_path", data[test], "--seq_length", "16",
                                  "--label2id_path", data["l2i"], "--prediction_path", pred, *extra])


def test_train_then_infer_is_deterministic(data, tmp_path, capsys):
    model = str(tmp_path / "ner.bin")
    assert _train(data, model, ["--test_path", data["test"]]) == 0
    out = capsys.readouterr().out
    assert "5 tags: O B-ANI I-ANI B-LOC I-LOC" in out and "examples/s" in out
    f1s = [float(v) for v in re.findall(r"epoch \d dev: f1 ([0-9.]+) precision [0-9.]+ recall", out)]
    assert len(f1s) == 2 and all(0.0 <= v <= 1.0 for v in f1s)
    assert re.search(r"test \(.*\): f1 [0-9.]+ precision [0-9.]+ recall [0-9.]+ gold_entities \d+", out)
    assert "1 sentences of" in out and "longer than --seq_length 16" in out
    sd = torch.load(model, weights_only=True)
    assert sd["output_layer.weight"].shape == (len(L2I) + 1, 128)  # the tags plus [PAD], as TencentPretrain
    assert not any(k.startswith("target.") for k in sd)

    pred = str(tmp_path / "pred.txt")
    assert _infer(data, model, pred) == 0
    lines = open(pred, encoding="utf-8").read().split("\n")
    assert lines[0] == "pred_label" and lines[-1] == ""
    rows = [line.split(" ") for line in lines[1:-1]]
    assert [len(r) for r in rows] == [len(toks) for toks, _ in data["test_rows"]]
    assert all(tag in L2I for r in rows for tag in r)
    assert rows[-1][16:] == ["O"] * 4  # tokens past --seq_length
    assert f"{len(rows)} tag sequences written" in capsys.readouterr().out

    # A labelled file is scored too; the second run with the same seed is bit-identical.
    model2, pred2 = str(tmp_path / "ner2.bin"), str(tmp_path / "pred2.txt")
    assert _train(data, model2) == 0
    assert _infer(data, model2, pred2, test="test") == 0
    assert re.search(r"tag sequences written .* \(precision [0-9.]+ recall [0-9.]+ f1 [0-9.]+ against",
                     capsys.readouterr().out)
    sd2 = torch.load(model2, weights_only=True)
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert open(pred2).read() == open(pred).read()
    # Without --config_path, inference reads the config fine-tuning wrote beside the model.
    assert os.path.isfile(str(tmp_path / "ner2_config.json"))
    pred3 = str(tmp_path / "pred3.txt")
    assert ner_infer_main(["--vocab_path", VOCAB, "--load_model_path", model2, "--test_path", data["nolabel"],
                           "--seq_length", "16", "--label2id_path", data["l2i"], "--prediction_path", pred3]) == 0
    assert open(pred3).read() == open(pred).read()


def test_starts_from_a_pretrained_checkpoint(data, tmp_path, capsys):
    from tencentpretrain.config import load_model_config
    from tencentpretrain.model_builder import build_model
    from tencentpretrain.model_io import save_state_dict
    cfg = load_model_config(os.path.join(ROOT, "models/bert/tiny_config.json"), {"layers_num": 1, "vocab_size": 345})
    pre = build_model(cfg)
    save_state_dict(pre.state_dict(), str(tmp_path / "pre.bin"))
    model = str(tmp_path / "m.bin")
    _train(data, model, ["--pretrained_model_path", str(tmp_path / "pre.bin"), "--epochs_num", "1",
                         "--learning_rate", "1e-9"])
    assert re.search(r"loaded .*pre.bin: \d+ tensors; new head: output_layer;", capsys.readouterr().out)
    sd = torch.load(model, weights_only=True)
    assert torch.allclose(sd["embedding.word.embedding.weight"], pre.embedding.word.embedding.weight, atol=1e-6)


def test_learns_the_synthetic_entities(data, tmp_path, capsys):
    _train(data, str(tmp_path / "m.bin"), ["--epochs_num", "3", "--learning_rate", "3e-3"])
    f1s = [float(v) for v in re.findall(r"epoch \d dev: f1 ([0-9.]+)", capsys.readouterr().out)]
    assert len(f1s) == 3 and max(f1s) >= 0.9, f1s


def test_encoding_space_and_wordpiece_tokenizers():
    from tencentpretrain.data.tokenizers import build_tokenizer
    from tencentpretrain.tasks.ner import IGNORE, encode
    from tencentpretrain.tasks.readers import TaggedExample
    ex = [TaggedExample(["Cat", "day,", "cr01", "the"], ["B-ANI", "O", "B-LOC", "O"])]
    space = build_tokenizer("space", vocab_path=VOCAB)  # one id per token, lower-cased; [UNK] if absent
    d = encode(ex, space, 8, L2I)
    assert space.convert_ids_to_tokens(d.tensors["src"][0].tolist()) == ["cat", "[UNK]", "[UNK]", "the"]
    assert d.tensors["tgt"].tolist() == [[1, 0, 3, 0]] and d.starts == [[0, 1, 2, 3]] and d.truncated == 0
    bert = build_tokenizer("bert", vocab_path=VOCAB)  # pieces: cat | day , | cr ##01 | the
    d = encode(ex, bert, 8, L2I)
    assert bert.convert_ids_to_tokens(d.tensors["src"][0].tolist()) == ["cat", "day", ",", "cr", "##01", "the"]
    assert d.tensors["tgt"].tolist() == [[1, 0, IGNORE, 3, IGNORE, 0]] and d.starts == [[0, 1, 3, 5]]
    d = encode(ex, bert, 4, L2I)  # "the" starts past --seq_length
    assert d.starts == [[0, 1, 3, None]] and d.truncated == 1 and d.tensors["src"].shape == (1, 4)
    assert d.tensors["seg"].tolist() == [[1, 1, 1, 1]]


def test_errors_are_user_errors(data, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text_a\tlabel\ncat dog\tB-ANI\n")
    with pytest.raises(UserError, match=r"bad.tsv, line 2: 2 tokens in text_a but 1 tags"):
        _train({**data, "train": str(bad)}, str(tmp_path / "m.bin"))
    bad.write_text("text_a\tlabel\ncat\tB-PER\n")
    with pytest.raises(UserError, match=r"line 2: tag 'B-PER' is not in --label2id_path"):
        _train({**data, "train": str(bad)}, str(tmp_path / "m.bin"))
    l2i = tmp_path / "l2i.json"
    for text, msg in [('{"O": 0, "B-A": 2}', "ids must be 0..1"), ('["O"]', "JSON object"),
                      ('{"O": 0, "[PAD]": 1}', "reserved"), ("{oops", "not valid JSON")]:
        l2i.write_text(text)
        with pytest.raises(UserError, match=re.escape(msg)):
            _train({**data, "l2i": str(l2i)}, str(tmp_path / "m.bin"))
    with pytest.raises(UserError, match="--crf_target is not supported"):
        _train(data, str(tmp_path / "m.bin"), ["--crf_target"])


def test_infer_refuses_wrong_model_or_label_map(data, tmp_path):
    from tencentpretrain.model_io import save_state_dict
    model = str(tmp_path / "m.bin")
    _train(data, model, ["--epochs_num", "1"])
    l2i = tmp_path / "l2i.json"
    l2i.write_text(json.dumps({"O": 0, "B-ANI": 1}))
    with pytest.raises(UserError, match=r"tags 5 labels \(plus \[PAD\]\) but .*l2i.json lists 2"):
        _infer({**data, "l2i": str(l2i)}, model, str(tmp_path / "p.txt"))
    sd = torch.load(model, weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.startswith("output_layer")}
    save_state_dict(sd, model)
    with pytest.raises(UserError, match="has no tagging head"):
        _infer(data, model, str(tmp_path / "p.txt"))


def test_scripts_run_and_report_errors_without_traceback(data, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "finetune", "run_ner.py"), *TINY,
                           "--train_path", data["train"], "--label2id_path", str(tmp_path / "missing.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: label2id file" in proc.stderr and "missing.json' does not exist" in proc.stderr
