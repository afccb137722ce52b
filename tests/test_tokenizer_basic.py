"""BERT basic tokenizer + WordPiece, char/space tokenizers, offsets, vocab errors."""
import random
import unicodedata

import pytest

from tencentpretrain.data.tokenizers import BertTokenizer, build_tokenizer
from tencentpretrain.data.vocab import Vocab
from tencentpretrain.errors import UserError
from tencentpretrain.registry import TOKENIZERS

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("bert")  # shipped uncased vocab, found relative to the package


def small_tokenizer(tmp_path, words, name="bert", do_lower_case=True):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIALS + words) + "\n", encoding="utf-8")
    return build_tokenizer(name, vocab_path=str(path), do_lower_case=do_lower_case)


def test_registry_and_special_ids(tok):
    assert {"bert", "char", "space"} <= set(TOKENIZERS.names())
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.vocab_size == 30522 == len(tok.vocab)
    assert tok.convert_ids_to_tokens([101, 7592, 102]) == ["[CLS]", "hello", "[SEP]"]
    assert tok.convert_tokens_to_ids(["hello", "not-a-token"]) == [7592, 100]


def test_accents_and_case(tmp_path, tok):
    assert tok.tokenize("Héllo Wörld") == ["hello", "world"]
    cased = small_tokenizer(tmp_path, ["Héllo", "Wörld", "hello"], do_lower_case=False)
    assert cased.tokenize("Héllo Wörld hello HELLO") == ["Héllo", "Wörld", "hello", "[UNK]"]
    # decomposed input (e + combining acute) strips the same way
    assert tok.tokenize("Ce\u0301line") == tok.tokenize("Céline") == ["celine"]


def test_cjk_punctuation_and_wordpiece(tok):
    assert tok.tokenize("中文abc") == ["中", "文", "abc"]
    assert tok.tokenize("don't stop-believing!?") == ["don", "'", "t", "stop", "-", "believing", "!", "?"]
    # ASCII symbols count as punctuation, like BERT ("$", "^", "`")
    assert tok.tokenize("$5^2`x") == ["$", "5", "^", "2", "`", "x"]
    assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]


def test_unknown_and_overlong_words(tmp_path, tok):
    t = small_tokenizer(tmp_path, ["un", "##aff", "##able", "a"])
    assert t.tokenize("unaffable unaffablex a") == ["un", "##aff", "##able", "[UNK]", "a"]
    assert tok.tokenize("a" * 100) != ["[UNK]"]
    assert tok.tokenize("a" * 101 + " ok") == ["[UNK]", "ok"]
    assert tok.tokenize("☃ ok") == ["[UNK]", "ok"]


def test_whitespace_and_control_chars(tok):
    assert tok.tokenize("  a\tb\nc\r\nd\u00a0e\u3000f  ") == list("abcdef")
    # control / format chars are removed inside a word (as BERT does), not treated as separators
    assert tok.tokenize("ab\x00c\u200bd\ufffde\x0bf") == tok.tokenize("abcdef")
    assert tok.tokenize("") == [] and tok.tokenize(" \t\n") == []


def test_special_tokens_in_text_stay_whole(tok):
    assert tok.tokenize("a[MASK]b [SEP] [sep]") == ["a", "[MASK]", "b", "[SEP]", "[", "sep", "]"]


def _norm(s):
    s = "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) not in ("Mn", "Cc", "Cf"))
    return s


AWKWARD = [
    "Héllo,  Wörld!!   naïve café\u0301 résumé",
    "  leading and trailing spaces   ",
    "Zürich's (über-)cool—really? “yes”… İstanbul ΟΔΟΣ",
    "mixed中文text and unaffable $3.50/hr e\u0301te\u0301",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp a\x0bb c\u200bd",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_offsets_point_into_original_text(tok, text):
    out = tok.tokenize_with_offsets(text)
    assert [t for t, _, _ in out] == tok.tokenize(text)
    prev_end = 0
    for token, s, e in out:
        assert prev_end <= s < e <= len(text)
        prev_end = e
        if token != "[UNK]":
            assert _norm(text[s:e]) == token.removeprefix("##"), (token, text[s:e])


def test_offsets_exact_spans(tok):
    text = "Héllo,  wörld!! unaffable"
    assert tok.tokenize_with_offsets(text) == [
        ("hello", 0, 5), (",", 5, 6), ("world", 8, 13), ("!", 13, 14), ("!", 14, 15),
        ("una", 16, 19), ("##ffa", 19, 22), ("##ble", 22, 25)]


def test_ascii_fast_path_matches_general_path(tok):
    rng = random.Random(0)
    alphabet = "abcXYZ019 .,'$-#[]\t\n\r\x0b\x1f\x7f" + "hello world unaffable "
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tok.tokenize(text) == [t for t, _, _ in tok.tokenize_with_offsets(text)], repr(text)


def test_wordpiece_cache_is_bounded(tmp_path):
    t = small_tokenizer(tmp_path, ["a", "##a"])
    assert BertTokenizer.cache_size > 0
    t._wordpiece.cache_clear()
    t.tokenize("aa aaa aa")
    info = t._wordpiece.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 2, BertTokenizer.cache_size)


def test_char_and_space_tokenizers(tmp_path):
    words = ["a", "b", "ab", "中"]
    char = small_tokenizer(tmp_path, words, name="char")
    assert char.tokenize("A b\tz中") == ["a", "b", "[UNK]", "中"]
    assert char.tokenize_with_offsets(" ab") == [("a", 1, 2), ("b", 2, 3)]
    space = small_tokenizer(tmp_path, words, name="space")
    assert space.tokenize("AB  a\tzz") == ["ab", "a", "[UNK]"]
    assert space.tokenize_with_offsets(" ab  b") == [("ab", 1, 3), ("b", 5, 6)]
    cased = small_tokenizer(tmp_path, words, name="space", do_lower_case=False)
    assert cased.tokenize("AB ab") == ["[UNK]", "ab"]


def test_vocab_load(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("[PAD]\nhello\r\n\nworld", encoding="utf-8")
    v = Vocab.load(str(p))
    assert v.i2w == ["[PAD]", "hello", "", "world"] and v.w2i["world"] == 3 and len(v) == 4
    assert v.get("nope", -1) == -1 and "hello" in v


def test_vocab_errors(tmp_path):
    with pytest.raises(UserError, match="vocab file not found: .*missing.txt"):
        Vocab.load(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="vocab file is empty: .*empty.txt"):
        Vocab.load(str(empty))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("[PAD]\nok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt line 3 is not valid UTF-8"):
        Vocab.load(str(bad))


def test_wrong_vocab_names_missing_token(tmp_path):
    p = tmp_path / "nomask.txt"
    p.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"wrong vocab: .*nomask.txt has no mask token '\[MASK\]'"):
        build_tokenizer("bert", vocab_path=str(p))


def test_unknown_tokenizer_name():
    with pytest.raises(UserError, match="unknown tokenizer 'wordsplit'.*bert"):
        build_tokenizer("wordsplit")


def test_convert_ids_out_of_range(tok):
    with pytest.raises(UserError, match="token id 40000 is outside the vocab"):
        tok.convert_ids_to_tokens([1, 40000])


def test_pickles_for_worker_processes(tok):
    import pickle
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.tokenize("unaffable Héllo") == ["una", "##ffa", "##ble", "hello"] and clone.mask_id == 103
