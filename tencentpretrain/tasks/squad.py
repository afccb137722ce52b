"""SQuAD v1.1 / v2.0: JSON reader, sliding-window features, span decoding, and the fine-tuning task.

Context tokens carry character offsets into the original context (from
`tokenizer.tokenize_with_offsets`), so an answer is mapped to tokens and back to text
by offsets alone: no re-tokenising, no whitespace heuristics, and accents or runs of
spaces in the context survive in the predicted text.
"""
import collections
import dataclasses
import json
import math
import os

import torch
import torch.nn.functional as F

from tencentpretrain.errors import UserError
from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.base import Task, register_task
from tencentpretrain.tasks.cli import finetune_main, infer_main
from tencentpretrain.tasks.engine import forward_all, pad
from tencentpretrain.tasks.heads import SpanQA
from tencentpretrain.utils.io import write_json


@dataclasses.dataclass
class SquadExample:
    qid: str
    question: str
    context: str
    answers: list  # [(text, char_start)], gold answers in file order
    is_impossible: bool = False


@dataclasses.dataclass
class SquadFeature:
    example_index: int
    src: list
    seg: list
    token_spans: dict  # position in src -> (char_start, char_end) in the context; context tokens only
    max_context: dict  # position in src -> is this window the one where the token has most context
    start_position: int = 0  # 0 = [CLS]: no answer in this window
    end_position: int = 0


def load_squad_json(path):
    """The raw dataset (`data` list of articles) and whether it is v2.0 (has unanswerable questions)."""
    if not os.path.isfile(path):
        raise UserError(f"SQuAD file '{path}' does not exist")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise UserError(f"SQuAD file '{path}' is empty")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid UTF-8 at byte {err.start}; SQuAD files are UTF-8 JSON") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}, line {err.lineno} column {err.colno}: invalid JSON ({err.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise UserError(f"{path}: expected a SQuAD JSON object with a 'data' list of articles")
    _check_structure(obj["data"], path)
    version_2 = str(obj.get("version", "")).lstrip("v").startswith("2") or any(
        "is_impossible" in qa for art in obj["data"] for p in art["paragraphs"] for qa in p["qas"])
    return obj["data"], version_2


def _expect(value, kind, where, what):
    """`value` when it is of `kind` (a type or a tuple of types; never a bool), else a UserError."""
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = " or ".join(_KIND_NAMES[k] for k in kinds)
        raise UserError(f"{where}: {what} must be {names}, got {json.dumps(value)[:40]}")
    return value


_KIND_NAMES = {dict: "a JSON object", list: "a JSON list", str: "a string", int: "an integer"}


def _check_structure(dataset, path):
    """The shape the readers and the official scoring walk: articles > paragraphs > qas > answers."""
    for a, article in enumerate(dataset):
        _expect(article, dict, f"{path}: data[{a}]", "an article")
        for p, paragraph in enumerate(_expect(article.get("paragraphs", []), list, f"{path}: data[{a}]",
                                              "'paragraphs'")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            _expect(paragraph, dict, where, "a paragraph")
            if "context" not in paragraph or "qas" not in paragraph:
                raise UserError(f"{where} needs 'context' and 'qas'")
            _expect(paragraph["context"], str, where, "'context'")
            for q, qa in enumerate(_expect(paragraph["qas"], list, where, "'qas'")):
                _expect(qa, dict, f"{where}.qas[{q}]", "a question")
                for key in ("id", "question"):
                    if key not in qa:
                        raise UserError(f"{where}.qas[{q}] has no '{key}'")
                _expect(qa["id"], (str, int), f"{where}.qas[{q}]", "'id'")
                _expect(qa["question"], str, f"{where}.qas[{q}]", "'question'")
                for n, answer in enumerate(_expect(qa.get("answers", []), list, f"{where}.qas[{q}]", "'answers'")):
                    there = f"{where}.qas[{q}].answers[{n}]"
                    if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
                        raise UserError(f"{there} (id {qa['id']}): an answer needs 'text' and 'answer_start'")
                    _expect(answer["text"], str, there, "'text'")
                    start = answer["answer_start"]
                    if not (isinstance(start, str) and start.strip().isdigit()):  # "12" is read as 12
                        _expect(start, int, there, "'answer_start'")


def read_squad(path):
    """SquadExamples from a v1.1 or v2.0 file; returns (examples, dataset, version_2)."""
    dataset, version_2 = load_squad_json(path)
    examples, seen = [], {}  # seen: question id -> where it was first
    for a, article in enumerate(dataset):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"data[{a}].paragraphs[{p}]"
            for q, qa in enumerate(paragraph["qas"]):
                qid = str(qa["id"])
                if qid in seen:  # the predictions JSON is keyed by id: one answer would overwrite the other
                    raise UserError(f"{path}: {where}.qas[{q}]: question id '{qid}' is used twice (first at "
                                    f"{seen[qid]}); question ids must be unique")
                seen[qid] = f"{where}.qas[{q}]"
                impossible = bool(qa.get("is_impossible", False))
                answers = [(answer["text"], int(answer["answer_start"])) for answer in qa.get("answers", [])]
                if not impossible and not answers:
                    raise UserError(f"{path}: {where}.qas[{q}] (id {qa['id']}) has no answers and is not marked "
                                    "'is_impossible': true")
                examples.append(SquadExample(qa["id"], qa["question"], paragraph["context"], answers, impossible))
    if not examples:
        raise UserError(f"SQuAD file '{path}' holds no questions")
    return examples, dataset, version_2


def windows(n_tokens, max_tokens, doc_stride):
    """(start, length) of the sliding windows over the context tokens (as Google's BERT)."""
    spans, start = [], 0
    while True:
        length = min(n_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += min(length, doc_stride)


def _is_max_context(spans, index, position):
    """Whether window `index` gives token `position` the most context on its shorter side."""
    best_score, best_index = None, None
    for i, (start, length) in enumerate(spans):
        if not start <= position < start + length:
            continue
        score = min(position - start, start + length - 1 - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, i
    return best_index == index


def answer_token_span(doc, char_start, char_end):
    """First and last context token overlapping [char_start, char_end), or None if none does."""
    covering = [i for i, (_, s, e) in enumerate(doc) if s < char_end and e > char_start]
    return (covering[0], covering[-1]) if covering else None


def build_features(examples, tokenizer, seq_length, doc_stride=128, max_query_length=64, training=False):
    """Split each example into windows of `[CLS] question [SEP] context-window [SEP]`.

    Training windows that do not contain the whole answer (and unanswerable questions)
    point both start and end at position 0, the [CLS] token. Returns (features, skipped),
    where skipped counts training examples whose answer_start does not match the text.
    """
    features, skipped = [], 0
    docs = {}  # questions share their paragraph's context: tokenise it once
    for ex_index, ex in enumerate(examples):
        query = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(ex.question)[:max_query_length])
        if ex.context not in docs:
            doc = tokenizer.tokenize_with_offsets(ex.context)
            docs = {ex.context: (doc, tokenizer.convert_tokens_to_ids([t for t, _, _ in doc]))}
        doc, doc_ids = docs[ex.context]
        max_doc = seq_length - len(query) - 3
        if max_doc < 1:
            raise UserError(f"--seq_length {seq_length} leaves no room for the context after a question of "
                            f"{len(query)} tokens; raise --seq_length or lower --max_query_length")
        answer_span = None
        if training and not ex.is_impossible:
            text, start = ex.answers[0]
            if ex.context[start:start + len(text)] != text:
                skipped += 1
                continue
            answer_span = answer_token_span(doc, start, start + len(text))
            if answer_span is None:
                skipped += 1
                continue
        spans = windows(len(doc), max_doc, doc_stride)
        for w, (start, length) in enumerate(spans):
            src = [tokenizer.cls_id] + query + [tokenizer.sep_id]
            seg = [1] * len(src)
            offset = len(src) - start  # position in src of context token i is i + offset
            src += doc_ids[start:start + length] + [tokenizer.sep_id]
            seg += [2] * (length + 1)
            token_spans = {i + offset: (doc[i][1], doc[i][2]) for i in range(start, start + length)}
            max_context = {i + offset: _is_max_context(spans, w, i) for i in range(start, start + length)}
            s_pos = e_pos = 0
            if answer_span and start <= answer_span[0] and answer_span[1] < start + length:
                s_pos, e_pos = answer_span[0] + offset, answer_span[1] + offset
            features.append(SquadFeature(ex_index, src, seg, token_spans, max_context, s_pos, e_pos))
    return features, skipped


def _top_indices(logits, n):
    return sorted(range(len(logits)), key=lambda i: logits[i], reverse=True)[:n]


def decode_predictions(examples, features, start_logits, end_logits, n_best_size=20, max_answer_length=30,
                       version_2=False, null_score_diff_threshold=0.0):
    """Best answer text per question id, from per-feature start/end logits (lists of floats).

    Returns (predictions {qid: text}, nbest {qid: [{text, probability, start_logit, end_logit}]},
    null_odds {qid: null score minus best span score}, v2.0 only). For v2.0 the prediction is
    the empty string when null_odds exceeds null_score_diff_threshold.
    """
    by_example = collections.defaultdict(list)
    for f_index, feature in enumerate(features):
        by_example[feature.example_index].append(f_index)
    predictions, nbest_out, null_odds = {}, {}, {}
    for ex_index, ex in enumerate(examples):
        candidates = {}  # text -> (score, start_logit, end_logit)
        null = None
        for f_index in by_example.get(ex_index, []):
            feature, s_logits, e_logits = features[f_index], start_logits[f_index], end_logits[f_index]
            feature_null = s_logits[0] + e_logits[0]
            if null is None or feature_null < null[0]:
                null = (feature_null, s_logits[0], e_logits[0])
            for s in _top_indices(s_logits, n_best_size):
                if s not in feature.token_spans or not feature.max_context[s]:
                    continue
                for e in _top_indices(e_logits, n_best_size):
                    if e not in feature.token_spans or e < s or e - s + 1 > max_answer_length:
                        continue
                    text = ex.context[feature.token_spans[s][0]:feature.token_spans[e][1]]
                    score = s_logits[s] + e_logits[e]
                    if text not in candidates or score > candidates[text][0]:
                        candidates[text] = (score, s_logits[s], e_logits[e])
        ranked = sorted(candidates.items(), key=lambda kv: kv[1][0], reverse=True)[:n_best_size]
        best_text, best_score = (ranked[0][0], ranked[0][1][0]) if ranked else ("", None)
        if version_2 and null is not None:
            ranked.append(("", null))
            ranked.sort(key=lambda kv: kv[1][0], reverse=True)
            ranked = ranked[:n_best_size]
            diff = null[0] - best_score if best_score is not None else 1e9  # no span at all: surely no answer
            null_odds[ex.qid] = diff
            if diff > null_score_diff_threshold:
                best_text = ""
        predictions[ex.qid] = best_text
        scores = [score for _, (score, _, _) in ranked]
        top = max(scores) if scores else 0.0
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps) or 1.0
        nbest_out[ex.qid] = [{"text": text, "probability": p / total, "start_logit": sl, "end_logit": el}
                             for (text, (_, sl, el)), p in zip(ranked, exps)]
    return predictions, nbest_out, null_odds


# ---------------------------------------------------------------- the fine-tuning task
@dataclasses.dataclass
class SquadData:
    """One SQuAD file ready for the model: examples, their windows, and the raw JSON for scoring."""
    examples: list
    features: list
    tensors: dict
    dataset: list
    version_2: bool


def encode_squad(squad, path, tokenizer, seq_length, doc_stride, max_query_length, training, log=print):
    """SquadData from read_squad's (examples, dataset, version_2): the windows as padded tensors, plus
    the answer positions for training."""
    examples, dataset, version_2 = squad
    features, skipped = build_features(examples, tokenizer, seq_length, doc_stride, max_query_length, training)
    if skipped:
        log(f"warning: {path}: {skipped} questions skipped (answer_start does not point at the answer text)")
    if not features:
        raise UserError(f"{path}: no usable questions")
    no_context = sorted({f.example_index for f in features}
                        - {f.example_index for f in features if f.token_spans})
    if no_context:
        ids = ", ".join(str(examples[i].qid) for i in no_context[:5]) + (", ..." if len(no_context) > 5 else "")
        log(f"warning: {path}: {len(no_context)} of {len(examples)} questions have an empty context (ids {ids}); "
            "no answer can be found in it")
    width = max(len(f.src) for f in features)
    tensors = {"src": pad([f.src for f in features], width, tokenizer.pad_id),
               "seg": pad([f.seg for f in features], width, 0)}
    if training:
        tensors["start"] = torch.tensor([f.start_position for f in features])
        tensors["end"] = torch.tensor([f.end_position for f in features])
    log(f"{path}: SQuAD v{'2.0' if version_2 else '1.1'}, {len(examples)} questions, {len(features)} windows")
    return SquadData(examples, features, tensors, dataset, version_2)


@register_task("squad")
class SquadTask(Task):
    """Start/end cross-entropy over the windows; answers decoded per question, scored by the official rules."""

    seq_length = 384
    train_description = "Fine-tune a span-extraction model on SQuAD v1.1 / v2.0 JSON files."
    infer_description = "Answer SQuAD-format questions; writes the official predictions JSON {id: answer}."

    def __init__(self, n_best_size=20, max_answer_length=30, null_score_diff_threshold=0.0):
        self.n_best_size = n_best_size
        self.max_answer_length = max_answer_length
        self.null_score_diff_threshold = null_score_diff_threshold

    @classmethod
    def add_options(cls, parser, training):
        g = parser.add_argument_group("SQuAD")
        g.add_argument("--doc_stride", type=int, default=128, help="tokens between the starts of two context windows")
        g.add_argument("--max_query_length", type=int, default=64, help="question tokens kept")
        g.add_argument("--max_answer_length", type=int, default=30, help="longest answer span, in tokens")
        g.add_argument("--n_best_size", type=int, default=20, help="start and end candidates per window")
        g.add_argument("--null_score_diff_threshold", type=float, default=0.0,
                       help="v2.0: answer '' when the no-answer score beats the best span by more than this")
        if not training:
            parser.add_argument("--nbest_path", default=None, help="also write the n-best answers with probabilities")
            parser.add_argument("--null_odds_path", default=None,
                                help="v2.0: also write {id: no-answer score minus best span score} (the official "
                                     "script's --na-prob-file)")

    @classmethod
    def from_args(cls, args, log=print):
        for name in ("doc_stride", "max_query_length", "max_answer_length", "n_best_size"):
            if getattr(args, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
        return cls(args.n_best_size, args.max_answer_length, args.null_score_diff_threshold).bind(args, log)

    def read(self, path, labelled=True):
        return read_squad(path)

    def encode(self, squad, tokenizer, seq_length, path, training=False):
        return encode_squad(squad, path, tokenizer, seq_length, self.args.doc_stride, self.args.max_query_length,
                            training, log=self.log)

    def build_model(self, cfg):
        return SpanQA(cfg)

    def model_from_checkpoint(self, cfg, state_dict, args):
        if "output_layer.weight" not in state_dict:
            raise UserError(f"{args.load_model_path} has no span head (output_layer.*); pass a model "
                            "written by finetune/run_squad.py")
        return SpanQA(cfg)

    def loss(self, model, batch):
        start, end = model(batch["src"], batch["seg"])
        return (F.cross_entropy(start.float(), batch["start"]) + F.cross_entropy(end.float(), batch["end"])) / 2

    def predict(self, model, data, run):
        """(predictions {id: text}, n-best lists, v2.0 null odds), as decode_predictions."""
        start, end = forward_all(model, data.tensors, run, per_token=True)
        return decode_predictions(data.examples, data.features, start.tolist(), end.tolist(), self.n_best_size,
                                  self.max_answer_length, data.version_2, self.null_score_diff_threshold)

    def evaluate(self, model, data, run):
        predictions, _, null_odds = self.predict(model, data, run)
        if data.version_2:
            out = M.squad_v2_evaluate(data.dataset, predictions)
            return {"f1": out.pop("f1"), **out}
        out = M.squad_v1_evaluate(data.dataset, predictions)
        return {"f1": out["f1"], "exact_match": out["exact_match"], "total": out["total"]}

    def write_predictions(self, data, predicted):
        args, (predictions, nbest, null_odds) = self.args, predicted
        write_json(args.prediction_path, predictions, ensure_ascii=False)
        if args.nbest_path:
            write_json(args.nbest_path, nbest, ensure_ascii=False)
        if args.null_odds_path:
            write_json(args.null_odds_path, null_odds, ensure_ascii=False)
        note = ""
        if any(qa.get("answers") for art in data.dataset for p in art["paragraphs"] for qa in p["qas"]):
            scores = (M.squad_v2_evaluate if data.version_2 else M.squad_v1_evaluate)(data.dataset, predictions)
            note = f" (exact {scores.get('exact', scores.get('exact_match')):.2f} f1 {scores['f1']:.2f})"
        return f"{len(predictions)} answers written to {args.prediction_path}{note}"


def squad_main(argv=None):
    return finetune_main(SquadTask, argv)


def squad_infer_main(argv=None):
    return infer_main(SquadTask, argv)
