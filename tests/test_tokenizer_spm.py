"""SentencePiece tokenizer: a tiny model trained in the test."""
import random

import pytest

from tencentpretrain.data.tokenizers import SentencePieceTokenizer, build_tokenizer
from tencentpretrain.errors import UserError

spm = pytest.importorskip("sentencepiece")

WORDS = "the quick brown fox jumps over lazy dog hello world data model token piece école".split()


def train(tmp_path, name, **kwargs):
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    prefix = str(tmp_path / name)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=40,
                                   minloglevel=2, **kwargs)
    return prefix + ".model"


@pytest.fixture(scope="module")
def bert_style(tmp_path_factory):
    return train(tmp_path_factory.mktemp("spm"), "bert_style", user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
                 pad_id=0, pad_piece="[PAD]", unk_id=1, unk_piece="[UNK]", bos_id=-1, eos_id=-1)


def test_round_trip_and_ids(bert_style):
    tok = build_tokenizer("bert", vocab_path="ignored.txt", spm_model_path=bert_style)
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == 40 == len(tok.vocab)
    text = "the quick brown fox jumps over the lazy dog"
    pieces = tok.tokenize("The QUICK brown fox jumps over the lazy dog")  # lower-cased first
    ids = tok.convert_tokens_to_ids(pieces)
    assert ids == tok.sp.encode(text) and tok.unk_id not in ids
    assert tok.convert_ids_to_tokens(ids) == pieces
    assert tok.sp.decode(ids) == text
    import pickle
    assert pickle.loads(pickle.dumps(tok)).tokenize(text) == pieces


def test_offsets(bert_style):
    tok = build_tokenizer(spm_model_path=bert_style)
    text = "  The école,  dog [MASK]x"
    out = tok.tokenize_with_offsets(text)
    assert [t for t, _, _ in out] == tok.tokenize(text)
    for piece, s, e in out:
        body = piece.replace("\u2581", "")
        assert text[s:e] == body if body == "[MASK]" else text[s:e].lower() == body, (piece, text[s:e])
    assert ("[MASK]", 18, 24) in out


def test_special_fallback(tmp_path):
    # default spm specials: <unk>=0 <s>=1 </s>=2, no pad, no mask
    path = train(tmp_path, "plain")
    with pytest.warns(UserWarning, match="no piece for pad, mask"):
        tok = build_tokenizer(spm_model_path=path)
    assert (tok.unk_id, tok.cls_id, tok.sep_id) == (0, 1, 2)
    assert tok.pad_id == tok.mask_id == tok.unk_id


def test_bad_model_file(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load SentencePiece model .*bad.model"):
        build_tokenizer(spm_model_path=str(bad))
    with pytest.raises(UserError, match="cannot load SentencePiece model .*absent.model"):
        build_tokenizer(spm_model_path=str(tmp_path / "absent.model"))
