"""Same tokens (and offsets) as Hugging Face's BertTokenizer on English text; skipped without transformers."""
import os

import pytest

from tencentpretrain import resources
from tencentpretrain.data.tokenizers import build_tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Hello, world!! The quick (brown) fox's jump-over: 3.14% of $5.00 — “quoted” text…",
    "Héllo Wörld naïve café résumé Zürich São Paulo Ångström",
    "unaffable antidisestablishmentarianism " + "x" * 101 + " ok",
    "tabs\tnewlines\n\r\nnbsp\u00a0ideographic\u3000space   runs",
    "中文字符 mixed中文text 日本語 한국어",
    "a[MASK]b [SEP] [sep] [CLS]",
    "e-mail: someone@example.com, url: https://example.com/path?q=1&r=2#frag",
]


@pytest.fixture(scope="module")
def pair():
    hf = transformers.BertTokenizer(resources.default_vocab_path(), do_lower_case=True)
    return build_tokenizer("bert"), hf


def _moby_paragraphs(n=300):
    path = os.path.join(resources.repo_root(), "corpora", "moby_dick.txt")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line for _, line in zip(range(n), f) if line.strip()]


def test_tokens_match_hugging_face(pair):
    tok, hf = pair
    for text in TEXTS + _moby_paragraphs():
        assert tok.tokenize(text) == hf.tokenize(text), text[:80]


def test_offsets_match_hugging_face(pair):
    tok, hf = pair
    for text in TEXTS + _moby_paragraphs(100):
        if not hf.is_fast:
            pytest.skip("offsets need a fast Hugging Face tokenizer")
        enc = hf(text, return_offsets_mapping=True, add_special_tokens=False)
        ours = tok.tokenize_with_offsets(text)
        assert [(s, e) for _, s, e in ours] == [tuple(x) for x in enc["offset_mapping"]], text[:80]


def test_cased_matches_hugging_face(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Héllo", "hello", "World", "##s", ",", "!"]
    path = tmp_path / "cased.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    hf = transformers.BertTokenizer(str(path), do_lower_case=False)
    tok = build_tokenizer("bert", vocab_path=str(path), do_lower_case=False)
    text = "Héllo, Worlds! hello HELLO héllo"
    assert tok.tokenize(text) == hf.tokenize(text)
