"""SQuAD: reading, char-offset mapping on awkward text, sliding windows, and span decoding."""

import pytest

from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.squad import (SquadExample, answer_token_span, build_features, decode_predictions,
                                         read_squad, windows)

SAMPLES = f"{repo_root()}/datasets/samples/squad"
CTX = "Zoë  Müller founded the Café Crème in Lyon in 1987.  It closed in 2004, after   seventeen years."


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("bert")


@pytest.mark.parametrize("answer", ["Zoë  Müller", "Café Crème", "Lyon", "1987", "2004",
                                    "after   seventeen years", "Crème in Lyon in 1987.", "2004,"])
def test_answer_maps_to_tokens_and_back_exactly(tok, answer):
    doc = tok.tokenize_with_offsets(CTX)
    start = CTX.index(answer)
    first, last = answer_token_span(doc, start, start + len(answer))
    assert CTX[doc[first][1]:doc[last][2]] == answer  # accents, punctuation and space runs survive


def test_partial_word_answer_widens_to_the_token(tok):
    doc = tok.tokenize_with_offsets(CTX)
    start = CTX.index("987")
    first, last = answer_token_span(doc, start, start + 3)
    assert CTX[doc[first][1]:doc[last][2]] == "1987"


def test_windows_cover_the_document():
    assert windows(20, 8, 4) == [(0, 8), (4, 8), (8, 8), (12, 8)]
    assert windows(3, 8, 4) == [(0, 3)]
    assert windows(0, 8, 4) == [(0, 0)]
    assert windows(10, 4, 8) == [(0, 4), (4, 4), (8, 2)]  # stride never skips tokens


def _numbers_example(first, last):
    context = " ".join(str(i) for i in range(1, 21))  # 20 one-token words "1" .. "20"
    answer = " ".join(str(i) for i in range(first, last + 1))
    return SquadExample("x", "where", context, [(answer, context.index(f" {answer} ") + 1)])


def test_windows_and_answer_positions_on_edges(tok):
    # seq_length 12 with a 1-token question leaves 8 context tokens per window: windows start at
    # tokens 0, 4, 8, 12. The answer "5 6 7 8" (tokens 4..7) ends window 0 and starts window 1.
    ex = _numbers_example(5, 8)
    features, skipped = build_features([ex], tok, seq_length=12, doc_stride=4, max_query_length=8, training=True)
    assert skipped == 0 and len(features) == 4
    assert [len(f.src) for f in features] == [12, 12, 12, 12]
    assert [(f.start_position, f.end_position) for f in features] == [(7, 10), (3, 6), (0, 0), (0, 0)]
    for f in features:
        assert f.src[0] == tok.cls_id and f.src[2] == tok.sep_id and f.src[-1] == tok.sep_id
        assert f.seg == [1, 1, 1] + [2] * 9
        if f.start_position:
            span = ex.context[f.token_spans[f.start_position][0]:f.token_spans[f.end_position][1]]
            assert span == "5 6 7 8"
    # "7 8 9 10" (tokens 6..9) crosses the end of window 0: only window 1 has it, window 0 points at [CLS]
    features, _ = build_features([_numbers_example(7, 10)], tok, 12, 4, 8, training=True)
    assert [(f.start_position, f.end_position) for f in features] == [(0, 0), (5, 8), (0, 0), (0, 0)]
    # token 5 ("6") is 2 from window 0's edge but 1 from window 1's: window 0 has its max context
    assert features[0].max_context[3 + 5] and not features[1].max_context[3 - 4 + 5]


def test_query_truncated_and_impossible_points_at_cls(tok):
    ex = SquadExample("y", "one two three four five six", CTX, [], is_impossible=True)
    (f,) = build_features([ex], tok, 64, 128, max_query_length=3, training=True)[0]
    assert f.src[1:5] == tok.convert_tokens_to_ids(["one", "two", "three", "[SEP]"])
    assert (f.start_position, f.end_position) == (0, 0)
    with pytest.raises(UserError, match="leaves no room for the context"):
        build_features([ex], tok, 5, 128, max_query_length=3)


def test_misaligned_answer_is_skipped(tok):
    ex = SquadExample("z", "who", CTX, [("Lyon", 0)])
    assert build_features([ex], tok, 64, 128, 16, training=True) == ([], 1)


def _logits(n, picks):
    row = [0.0] * n
    for i, v in picks.items():
        row[i] = v
    return row


def test_decode_maps_back_to_original_text(tok):
    ex = SquadExample("q", "who founded it", CTX, [])
    (f,), _ = build_features([ex], tok, 64, 128, 16)
    pos = sorted(f.token_spans)
    first = pos[0]  # the first context token ("zoe")
    last = next(p for p in pos if f.token_spans[p][1] == CTX.index(" founded"))  # the one ending "Müller"
    n = len(f.src)
    preds, nbest, _ = decode_predictions([ex], [f], [_logits(n, {first: 5.0})], [_logits(n, {last: 5.0})])
    assert preds == {"q": "Zoë  Müller"}
    assert nbest["q"][0]["text"] == "Zoë  Müller"
    assert sum(c["probability"] for c in nbest["q"]) == pytest.approx(1.0)
    # the best pair is too long for max_answer_length: the best short one wins
    end_far = pos[-1]
    start_logits = _logits(n, {first: 5.0, end_far: 1.0})
    end_logits = _logits(n, {end_far: 6.0})
    preds, _, _ = decode_predictions([ex], [f], [start_logits], [end_logits], max_answer_length=30)
    assert preds["q"] == CTX[f.token_spans[first][0]:]
    preds, _, _ = decode_predictions([ex], [f], [start_logits], [end_logits], max_answer_length=2)
    assert preds["q"] == "."  # the last token alone (start 1.0 + end 6.0) is the best short span


def test_decode_v2_null_threshold(tok):
    ex = SquadExample("q", "when", CTX, [])
    (f,), _ = build_features([ex], tok, 64, 128, 16)
    p = next(p for p in f.token_spans if CTX[slice(*f.token_spans[p])] == "2004")
    n = len(f.src)
    start, end = _logits(n, {0: 3.0, p: 2.0}), _logits(n, {0: 3.0, p: 3.0})  # null 6, span 5
    preds, nbest, odds = decode_predictions([ex], [f], [start], [end], version_2=True)
    assert preds["q"] == "" and odds["q"] == pytest.approx(1.0)
    assert nbest["q"][0]["text"] == ""
    preds, _, _ = decode_predictions([ex], [f], [start], [end], version_2=True, null_score_diff_threshold=1.5)
    assert preds["q"] == "2004"


def test_read_samples_and_detect_version():
    ex, data, v2 = read_squad(f"{SAMPLES}/tiny-v1.1.json")
    assert not v2 and len(ex) == 5 and ex[0].answers[0] == ("Zoë  Müller", 0)
    ex, data, v2 = read_squad(f"{SAMPLES}/tiny-v2.0.json")
    assert v2 and [e.is_impossible for e in ex] == [False, True, False, True]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"data": [}', "line 1 column 11: invalid JSON"),
    ('[1, 2]', "expected a SQuAD JSON object"),
    ('{"data": [{"paragraphs": [{"qas": []}]}]}', "data[0].paragraphs[0] needs 'context' and 'qas'"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a"}]}]}]}', "qas[0] has no 'question'"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "question": "q", "answers": []}]}]}]}',
     "(id a) has no answers"),
    ('{"data": []}', "holds no questions"),
])
def test_read_errors(tmp_path, content, message):
    path = tmp_path / "s.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_squad(str(path))
    assert message in str(err.value)
