"""Named-entity recognition (token tagging), TencentPretrain's run_ner.py / run_ner_infer.py.

Data: a TSV with `text_a` (space-separated tokens, one per Chinese character in MSRA-NER) and
`label` (one BIO tag per token), plus a label2id JSON such as {"O": 0, "B-LOC": 1, "I-LOC": 2}.
As in TencentPretrain the input is the tokens alone, no [CLS]/[SEP], and the tagger's output
layer has one class more than label2id: "[PAD]", the tag of padding, never trained on nor
predicted here. So checkpoints are interchangeable with TencentPretrain's.

Tokens: with the default `--tokenizer space` (TencentPretrain's choice) every token is one
vocabulary id ([UNK] when absent). Another tokenizer (`--tokenizer bert`) may split a token into
several pieces: the tag is learned and read on the first piece; the other pieces are not trained
on. Pieces beyond --seq_length are cut off; their tokens are predicted "O".
"""
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_embedding, build_encoder
from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.base import Task, register_task
from tencentpretrain.tasks.cli import finetune_main, infer_main
from tencentpretrain.tasks.engine import batches, pad
from tencentpretrain.tasks.readers import label_warning, read_label2id, read_ner_tsv
from tencentpretrain.utils.io import atomic_write

IGNORE = -100  # target of padding and non-first pieces: no loss


class Tagger(nn.Module):
    """Per-token hidden -> logits over the tags plus "[PAD]" (TencentPretrain's NerTagger keys)."""

    def __init__(self, cfg, labels_num):
        super().__init__()
        self.labels_num = labels_num  # including [PAD]
        self.embedding = build_embedding(cfg)
        self.encoder = build_encoder(cfg)
        self.output_layer = nn.Linear(cfg.hidden_size, labels_num)

    def forward(self, src, seg):
        return self.output_layer(self.encoder(self.embedding(src, seg), seg))


@dataclasses.dataclass
class TaggingData:
    """Encoded sentences: `tensors` (src, seg, tgt) for the engine, and per sentence the piece index
    of each token's first piece (None when cut off) and the gold tags (None when unlabelled)."""
    tensors: dict
    starts: list
    gold: list | None
    truncated: int = 0


def encode(examples, tokenizer, seq_length, l2i):
    """Pieces of each sentence (at most seq_length, segment 1, no [CLS]/[SEP]) and their targets."""
    srcs, tgts, starts, truncated = [], [], [], 0
    for ex in examples:
        src, tgt, first = [], [], []
        for i, token in enumerate(ex.tokens):
            pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(token)) or [tokenizer.unk_id]
            first.append(len(src) if len(src) < seq_length else None)
            src += pieces
            tag = l2i[ex.labels[i]] if ex.labels is not None else IGNORE
            tgt += [tag] + [IGNORE] * (len(pieces) - 1)
        truncated += len(src) > seq_length
        srcs.append(src[:seq_length])
        tgts.append(tgt[:seq_length])
        starts.append(first)
    width = max(len(s) for s in srcs)
    tensors = {"src": pad(srcs, width, tokenizer.pad_id), "seg": pad([[1] * len(s) for s in srcs], width, 0),
               "tgt": pad(tgts, width, IGNORE)}
    gold = [ex.labels for ex in examples] if all(ex.labels is not None for ex in examples) else None
    return TaggingData(tensors, starts, gold, truncated)


@register_task("ner")
class TaggingTask(Task):
    """Token cross-entropy over first pieces; dev metric: span-level F1 (metrics.span_f1)."""

    train_description = "Fine-tune a BIO tagger (NER) on TSV files (text_a<TAB>label, space-separated)."
    infer_description = ("Tag a TSV file (text_a, space-separated tokens) with a fine-tuned NER model; "
                         "writes a 'pred_label' header, then one line of space-separated tags per sentence.")

    def __init__(self, id2label, label2id=None):
        self.id2label = id2label  # without [PAD]
        self.label2id = label2id or {tag: i for i, tag in enumerate(id2label)}

    @classmethod
    def add_options(cls, parser, training):
        parser.set_defaults(tokenizer="space")
        parser.add_argument("--label2id_path", required=True, help='tag ids as JSON, e.g. {"O": 0, "B-LOC": 1, ...}')
        parser.add_argument("--crf_target", action="store_true", help="not supported here (refused)")

    @classmethod
    def from_args(cls, args, log=print):
        if args.crf_target:
            raise UserError("--crf_target is not supported: this toolkit has no CRF layer; drop the flag to train "
                            "with per-token cross-entropy (TencentPretrain's default)")
        l2i = read_label2id(args.label2id_path)
        return cls([tag for tag, _ in sorted(l2i.items(), key=lambda kv: kv[1])], l2i).bind(args, log)

    def read(self, path, labelled=True):
        return read_ner_tsv(path, self.label2id, require_label=labelled)

    def prepare(self, cfg, splits):
        self.log(f"{len(self.label2id)} tags: {' '.join(self.id2label)}")
        (train_path, train), *others = splits
        seen = {tag for ex in train for tag in ex.labels}
        for path, examples in others:
            note = label_warning(examples, path, seen, f"tags never seen in training ({train_path})",
                                 "the model will rarely if ever predict them", lambda ex: ex.labels or [])
            if note:
                self.log(note)

    def encode(self, examples, tokenizer, seq_length, path, training=False):
        data = encode(examples, tokenizer, seq_length, self.label2id)
        if data.truncated:
            self.log(f"note: {data.truncated} sentences of {path} are longer than --seq_length {seq_length} "
                     "pieces; their tail is cut off (predicted 'O')")
        return data

    def build_model(self, cfg):
        return Tagger(cfg, len(self.label2id) + 1)

    def model_from_checkpoint(self, cfg, state_dict, args):
        weight = state_dict.get("output_layer.weight")
        if weight is None or "output_layer_2.weight" in state_dict:
            raise UserError(f"{args.load_model_path} has no tagging head (output_layer.*); pass a model written by "
                            "finetune/run_ner.py")
        if weight.shape[0] != len(self.label2id) + 1:
            raise UserError(f"{args.load_model_path} tags {weight.shape[0] - 1} labels (plus [PAD]) but "
                            f"{args.label2id_path} lists {len(self.label2id)}; pass the label2id file used for "
                            "fine-tuning")
        return self.build_model(cfg)

    def loss(self, model, batch):
        logits = model(batch["src"], batch["seg"]).float()
        tgt = batch["tgt"][:, :logits.shape[1]]  # the engine trims all-padding columns of src/seg
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE)

    @torch.no_grad()
    def predict(self, model, data, run):
        """One tag per token of each sentence ("O" where the token was cut off)."""
        model.eval()
        ids = []
        tensors = {k: data.tensors[k] for k in ("src", "seg")}
        for batch in batches(tensors, run.batch_size, None, run.device):
            with run.autocast():
                logits = model(batch["src"], batch["seg"]).float()
            ids.extend(logits[..., :len(self.id2label)].argmax(-1).cpu().tolist())  # never "[PAD]"
        return [[self.id2label[row[s]] if s is not None else "O" for s in starts]
                for row, starts in zip(ids, data.starts)]

    def evaluate(self, model, data, run):
        return M.span_f1(data.gold, self.predict(model, data, run))

    def write_predictions(self, data, preds):
        with atomic_write(self.args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
            f.write("pred_label\n")
            for tags in preds:
                f.write(" ".join(tags) + "\n")
        note = ""
        if data.gold is not None:
            s = M.span_f1(data.gold, preds)
            note = (f" (precision {s['precision']:.4f} recall {s['recall']:.4f} f1 {s['f1']:.4f} against the "
                    "file's tags)")
        return f"{len(preds)} tag sequences written to {self.args.prediction_path}{note}"


def ner_main(argv=None):
    return finetune_main(TaggingTask, argv)


def ner_infer_main(argv=None):
    return infer_main(TaggingTask, argv)
