"""TencentPretrain's utility scripts on tiny random models: average_models, extract_embeddings,
topn_words_indep, extract_features, cloze_test, generate_lm. Outputs are checked against values
computed here directly from the checkpoint or the model."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_state_dict_file, save_state_dict
from tencentpretrain.resources import repo_root

ROOT = repo_root()
VOCAB = os.path.join(ROOT, "datasets", "samples", "vocab.txt")  # 345 tokens
BERT_CONFIG = os.path.join(ROOT, "models", "bert", "tiny_config.json")
BERT = ["--config_path", BERT_CONFIG, "--layers_num", "1", "--vocab_path", VOCAB, "--device", "cpu"]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"tp_script_{name}", os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(config_path, seed, **overrides):
    torch.manual_seed(seed)
    return build_model(load_model_config(config_path, {"vocab_size": 345, **overrides})).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny BERTs (different seeds), a tiny GPT-2 style causal LM, and their files."""
    out = tmp_path_factory.mktemp("tp_scripts")
    paths = {"bert": str(out / "bert.bin"), "bert2": str(out / "bert2.bin"), "gpt": str(out / "gpt.bin"),
             "gpt_config": str(out / "gpt_config.json")}
    save_state_dict(_model(BERT_CONFIG, 0, layers_num=1).state_dict(), paths["bert"])
    save_state_dict(_model(BERT_CONFIG, 1, layers_num=1).state_dict(), paths["bert2"])
    with open(os.path.join(ROOT, "models", "gpt2", "config.json")) as f:
        gpt = json.load(f)
    gpt.update(emb_size=32, hidden_size=32, feedforward_size=64, heads_num=2, layers_num=1, max_seq_length=32)
    with open(paths["gpt_config"], "w") as f:
        json.dump(gpt, f)
    save_state_dict(_model(paths["gpt_config"], 2).state_dict(), paths["gpt"])
    return paths


def _load(path, config_path, **overrides):
    model = build_model(load_model_config(config_path, {"vocab_size": 345, **overrides})).eval()
    model.load_state_dict(load_state_dict_file(path))
    return model


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- average_models
def test_average_models_is_the_elementwise_mean(tiny, tmp_path, capsys):
    out = str(tmp_path / "avg.safetensors")
    assert _script("average_models").main(["--model_list_path", tiny["bert"], tiny["bert2"],
                                           "--output_model_path", out]) == 0
    a, b, avg = (load_state_dict_file(p) for p in (tiny["bert"], tiny["bert2"], out))
    assert set(avg) == set(a) and "averaged 2 checkpoints" in capsys.readouterr().out
    for key in a:
        assert avg[key].dtype == a[key].dtype
        torch.testing.assert_close(avg[key], (a[key] + b[key]) / 2, rtol=0, atol=1e-7)
    assert not torch.equal(avg["embedding.word.embedding.weight"], a["embedding.word.embedding.weight"])


def test_average_models_refuses_mismatched_checkpoints(tiny, tmp_path):
    script = _script("average_models")
    sd = load_state_dict_file(tiny["bert"])
    fewer = {k: v for k, v in sd.items() if not k.startswith("target.sp.")}
    save_state_dict(fewer, str(tmp_path / "fewer.bin"))
    with pytest.raises(UserError, match=r"fewer.bin does not have the keys of .*bert.bin: 4 keys missing "
                                        r"\(target.sp.linear_1.bias"):
        script.main(["--model_list_path", tiny["bert"], str(tmp_path / "fewer.bin"),
                     "--output_model_path", str(tmp_path / "x.bin")])
    wide = dict(sd, **{"embedding.seg.embedding.weight": torch.zeros(3, 64)})
    save_state_dict(wide, str(tmp_path / "wide.bin"))
    with pytest.raises(UserError, match=r"embedding.seg.embedding.weight has shape \(3, 64\) but \(3, 128\)"):
        script.main(["--model_list_path", tiny["bert"], str(tmp_path / "wide.bin"),
                     "--output_model_path", str(tmp_path / "x.bin")])
    with pytest.raises(UserError, match="model file not found: .*nothere.bin"):
        script.main(["--model_list_path", tiny["bert"], str(tmp_path / "nothere.bin"),
                     "--output_model_path", str(tmp_path / "x.bin")])
    assert not (tmp_path / "x.bin").exists()


# ---------------------------------------------------------------- extract_embeddings, topn_words_indep
def test_extract_embeddings_writes_each_tokens_row(tiny, tmp_path):
    out = tmp_path / "emb.txt"
    assert _script("extract_embeddings").main(["--load_model_path", tiny["bert"], "--vocab_path", VOCAB,
                                               "--word_embedding_path", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    weight = load_state_dict_file(tiny["bert"])["embedding.word.embedding.weight"]
    vocab = open(VOCAB, encoding="utf-8").read().splitlines()
    assert lines[0] == "345 128" and len(lines) == 346
    for i in (0, 4, 200, 344):
        fields = lines[i + 1].split(" ")
        assert fields[0] == vocab[i] and len(fields) == 129
        assert torch.tensor([float(x) for x in fields[1:]]).equal(weight[i])


def test_extract_embeddings_refuses_a_vocab_of_another_size(tiny, tmp_path):
    with pytest.raises(UserError, match=r"vocab size mismatch: .*bert.bin has 345 word-embedding rows but "
                                        r".*google_uncased_en_vocab.txt has 30522 tokens"):
        _script("extract_embeddings").main(["--load_model_path", tiny["bert"],
                                            "--word_embedding_path", str(tmp_path / "e.txt")])
    assert not (tmp_path / "e.txt").exists()


def test_topn_words_match_a_manual_cosine_ranking(tiny, tmp_path, capsys):
    words = _write(tmp_path / "words.txt", "cat\n\ndog extra fields\n")
    assert _script("topn_words_indep").main(["--load_model_path", tiny["bert"], "--vocab_path", VOCAB,
                                             "--test_path", words, "--topn", "5"]) == 0
    blocks = capsys.readouterr().out.strip("\n").split("\n\n")
    weight = load_state_dict_file(tiny["bert"])["embedding.word.embedding.weight"]
    unit = weight / weight.norm(dim=1, keepdim=True)
    vocab = open(VOCAB, encoding="utf-8").read().splitlines()
    assert len(blocks) == 2
    for block, word in zip(blocks, ("cat", "dog")):
        lines = block.split("\n")
        assert lines[0] == f"Target word: {word}" and len(lines) == 6
        i = vocab.index(word)
        sims = unit @ unit[i]
        sims[i] = -2.0  # the word itself is left out
        expected = sims.argsort(descending=True)[:5]
        got = [line.split("\t") for line in lines[1:]]
        assert [w for w, _ in got] == [vocab[j] for j in expected]
        assert [float(s) for _, s in got] == pytest.approx(sims[expected].tolist(), abs=1e-6)


def test_topn_words_refuses_unknown_words(tiny, tmp_path):
    words = _write(tmp_path / "words.txt", "cat\nzebra\n")
    with pytest.raises(UserError, match=r"1 target words are not in the vocabulary .*'zebra' \(line 2\)"):
        _script("topn_words_indep").main(["--load_model_path", tiny["bert"], "--vocab_path", VOCAB,
                                          "--test_path", words])


# ---------------------------------------------------------------- extract_features
SENTENCES = "the cat sat on the mat\n\nshe plays soccer\nthe old man read the newspaper\ni think it will rain today\n"


def _expected_features(tiny, texts, pooling):
    from tencentpretrain.targets.cls_target import pool
    model = _load(tiny["bert"], BERT_CONFIG, layers_num=1)
    tok = build_tokenizer("bert", vocab_path=VOCAB)
    rows = []
    with torch.no_grad():
        for text in texts:  # one at a time, no padding
            src = torch.tensor([[tok.cls_id] + tok.convert_tokens_to_ids(tok.tokenize(text)) + [tok.sep_id]])
            seg = torch.ones_like(src)
            rows.append(pool(model.encode(src, seg), seg, pooling)[0])
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["first", "mean", "max", "last"])
def test_extract_features_pools_the_encoder_output(tiny, tmp_path, capsys, pooling):
    text = _write(tmp_path / "s.txt", SENTENCES)
    out = str(tmp_path / "f.pt")
    assert _script("extract_features").main(BERT + ["--load_model_path", tiny["bert"], "--test_path", text,
                                                    "--prediction_path", out, "--pooling", pooling,
                                                    "--batch_size", "3"]) == 0
    printed = capsys.readouterr().out
    assert "note: 1 blank lines" in printed and "(4, 128)" in printed
    got = torch.load(out, weights_only=True)
    expected = _expected_features(tiny, [s for s in SENTENCES.splitlines() if s], pooling)
    assert got.shape == (4, 128) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_extract_features_refuses_a_config_that_does_not_fit(tiny, tmp_path):
    text = _write(tmp_path / "s.txt", SENTENCES)
    args = BERT + ["--load_model_path", tiny["bert"], "--test_path", text, "--prediction_path", str(tmp_path / "f")]
    with pytest.raises(UserError, match=r"bert.bin does not fit the model config: 16 model keys missing from the "
                                        r"checkpoint: encoder.transformer.1"):
        _script("extract_features").main(args + ["--layers_num", "2"])
    with pytest.raises(UserError, match=r"--config_path is required"):
        _script("extract_features").main(args[2:])
    assert not (tmp_path / "f").exists()


def test_extract_features_whitening(tiny, tmp_path):
    text = _write(tmp_path / "s.txt", SENTENCES)
    out = str(tmp_path / "w.pt")
    script = _script("extract_features")
    args = BERT + ["--load_model_path", tiny["bert"], "--test_path", text, "--prediction_path", out]
    assert script.main(args + ["--whitening_size", "2"]) == 0
    got = torch.load(out, weights_only=True)
    assert got.shape == (4, 2)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(4), rtol=0, atol=1e-5)
    # 4 sentences: the covariance has rank 3 at most.
    with pytest.raises(UserError, match=r"--whitening_size 4 exceeds the rank 3 of the feature covariance"):
        script.main(args + ["--whitening_size", "4"])


# ---------------------------------------------------------------- cloze_test
def test_cloze_test_top1_is_the_argmax_of_the_mlm_logits(tiny, tmp_path):
    text = _write(tmp_path / "c.txt", "the [MASK] sat on the mat\nshe plays soccer\nthe [MASK] read the [MASK]\n")
    out = tmp_path / "pred.txt"
    assert _script("cloze_test").main(BERT + ["--load_model_path", tiny["bert"], "--test_path", text,
                                              "--prediction_path", str(out), "--topn", "4", "--seed", "3"]) == 0
    blocks = out.read_text(encoding="utf-8").strip("\n").split("\n\n")
    assert len(blocks) == 4  # one mask, one random mask, two masks
    model = _load(tiny["bert"], BERT_CONFIG, layers_num=1)
    tok = build_tokenizer("bert", vocab_path=VOCAB)
    with_masks = [blocks[0], blocks[2], blocks[3]]
    for block, (text_, position) in zip(with_masks, [("the [MASK] sat on the mat", 2),
                                                      ("the [MASK] read the [MASK]", 2),
                                                      ("the [MASK] read the [MASK]", 5)]):
        lines = block.split("\n")
        ids = [tok.cls_id] + tok.convert_tokens_to_ids(tok.tokenize(text_)) + [tok.sep_id]
        assert lines[0] == "".join(tok.convert_ids_to_tokens(ids)) and len(lines) == 2
        with torch.no_grad():
            src = torch.tensor([ids])
            logits = model.target.mlm.logits(model.encode(src, torch.ones_like(src))[0, position])
        top = tok.convert_ids_to_tokens(logits.topk(4).indices.tolist())
        assert lines[1] == "Predicted answer: " + " ".join(top)
    random_block = blocks[1].split("\n")
    assert random_block[0].count("[MASK]") == 1 and len(random_block[1].split()) == 6
    answer = random_block[2].removeprefix("Correct answer: ")
    assert answer in ("she", "plays", "soccer")
    assert random_block[0].replace("[MASK]", answer) == "[CLS]sheplayssoccer[SEP]"


def test_cloze_test_refuses_a_model_without_mlm_head(tiny, tmp_path):
    sd = {k: v for k, v in load_state_dict_file(tiny["bert"]).items() if not k.startswith("target.mlm.")}
    save_state_dict(sd, str(tmp_path / "nomlm.bin"))
    text = _write(tmp_path / "c.txt", "the [MASK] sat\n")
    with pytest.raises(UserError, match=r"nomlm.bin has no mlm head \(target.mlm.\*; it has: sp\)"):
        _script("cloze_test").main(BERT + ["--load_model_path", str(tmp_path / "nomlm.bin"), "--test_path", text,
                                           "--prediction_path", str(tmp_path / "p.txt")])


# ---------------------------------------------------------------- generate_lm
def test_generate_lm_greedy_equals_manual_argmax_and_sampling_follows_the_seed(tiny, tmp_path):
    script = _script("generate_lm")
    text = _write(tmp_path / "b.txt", "the cat sat\nshe plays\n")
    base = ["--load_model_path", tiny["gpt"], "--config_path", tiny["gpt_config"], "--vocab_path", VOCAB,
            "--test_path", text, "--seq_length", "12", "--device", "cpu"]

    def run(name, *extra):
        out = tmp_path / name
        assert script.main(base + ["--prediction_path", str(out), *extra]) == 0
        return out.read_text(encoding="utf-8")

    greedy = run("greedy.txt", "--top_k", "1").split("\n")
    model = _load(tiny["gpt"], tiny["gpt_config"])
    tok = build_tokenizer("bert", vocab_path=VOCAB)
    assert len(greedy) == 4 and greedy[0] == "the cat sat" and greedy[2] == "she plays"
    for prompt, generated in [("the cat sat", greedy[1]), ("she plays", greedy[3])]:
        ids = [tok.cls_id] + tok.convert_tokens_to_ids(tok.tokenize(prompt))
        with torch.no_grad():
            while len(ids) < 12:
                src = torch.tensor([ids])
                ids.append(int(model.target.lm.output_layer(model.encode(src, torch.ones_like(src))[0, -1]).argmax()))
        assert generated == "".join(tok.convert_ids_to_tokens(ids))
    first, again = run("s1.txt", "--seed", "5", "--top_p", "0.9"), run("s2.txt", "--seed", "5", "--top_p", "0.9")
    other = run("s3.txt", "--seed", "6", "--top_p", "0.9")
    assert first == again and first != other and first.startswith("the cat sat\n[CLS]thecatsat")


def test_generate_lm_filtering():
    script = _script("generate_lm")
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assert script.filter_logits(logits, top_k=2).isinf().tolist() == [True, False, False, True]
    # softmax([3, 2, 1, 0]) = 0.64, 0.24, 0.09, 0.03: top_p 0.7 keeps 3 and 2 (the crossing token stays).
    assert script.filter_logits(logits, top_p=0.7).isinf().tolist() == [True, False, False, True]
    assert script.filter_logits(logits, top_p=0.5).isinf().tolist() == [True, False, True, True]


# ---------------------------------------------------------------- command lines
NAMES = ("average_models", "extract_embeddings", "topn_words_indep", "extract_features", "cloze_test", "generate_lm")


@pytest.mark.parametrize("name", NAMES)
def test_help_lists_the_tencentpretrain_flags(name, capsys):
    flags = {"average_models": ["--model_list_path", "--output_model_path"],
             "extract_embeddings": ["--load_model_path", "--vocab_path", "--spm_model_path", "--word_embedding_path"],
             "topn_words_indep": ["--load_model_path", "--vocab_path", "--test_path", "--topn"],
             "extract_features": ["--load_model_path", "--config_path", "--test_path", "--prediction_path",
                                  "--pooling", "--whitening_size", "--seq_length", "--batch_size"],
             "cloze_test": ["--load_model_path", "--config_path", "--test_path", "--prediction_path", "--topn"],
             "generate_lm": ["--load_model_path", "--config_path", "--vocab_path", "--test_path",
                             "--prediction_path", "--seq_length", "--top_k", "--top_p", "--temperature", "--seed"]}
    with pytest.raises(SystemExit) as exit_:
        _script(name).main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: ") and all(flag in text for flag in flags[name])


def test_bad_input_exits_2_with_a_message(tiny, tmp_path):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "generate_lm.py"),
                          "--load_model_path", tiny["gpt"], "--config_path", tiny["gpt_config"], "--vocab_path",
                          VOCAB, "--test_path", str(tmp_path / "missing.txt"), "--prediction_path",
                          str(tmp_path / "g.txt"), "--seq_length", "8"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "error: --test_path '" in run.stderr and "missing.txt' does not exist" in run.stderr
