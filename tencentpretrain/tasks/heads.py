"""Task models: the pre-trained embedding and encoder plus a small head.

Key names are TencentPretrain's: `embedding.*`, `encoder.*`, then `output_layer_1.*`
(pooler on the first token) and `output_layer_2.*` for classification/regression, or
`output_layer.*` (hidden -> start/end logits) for span extraction.

The classifier's `pooling` (TencentPretrain's `--pooling`) picks the sentence vector that
`output_layer_1` sees; it has no weights, so fine-tuning records it in the model config
written beside the model (see tasks/classification.py) and inference reads it from there.
"""
import torch
import torch.nn as nn

from tencentpretrain.model_builder import build_embedding, build_encoder, init_weights
from tencentpretrain.model_io import load_model_weights
from tencentpretrain.utils.runtime import autocast


POOLINGS = ("first", "mean", "max", "last")


def pool(hidden, seg, kind):
    """One vector per sequence from hidden [B, L, H], with seg [B, L] (0 = padding).

    first: position 0 ([CLS]); mean / max: over the non-padding positions; last: the last
    non-padding position. Unlike TencentPretrain, segment B counts once in `mean` and `max`
    (TencentPretrain multiplies by the segment id, 2 for B).
    """
    if kind == "first":
        return hidden[:, 0]
    keep = seg > 0
    if kind == "mean":
        weights = keep.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    if kind == "max":
        return hidden.masked_fill(~keep.unsqueeze(-1), torch.finfo(hidden.dtype).min).max(1).values
    if kind == "last":
        positions = torch.arange(seg.shape[1], device=seg.device).expand_as(seg)
        last = (positions * keep).max(1).values
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling '{kind}'; choose one of: {', '.join(POOLINGS)}")


class Classifier(nn.Module):
    """Pooled hidden (cfg.pooling) -> tanh(dense) -> labels_num logits; labels_num 1 is regression."""

    def __init__(self, cfg, labels_num):
        super().__init__()
        self.labels_num = labels_num
        self.pooling = cfg.pooling
        self.embedding = build_embedding(cfg)
        self.encoder = build_encoder(cfg)
        self.output_layer_1 = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.output_layer_2 = nn.Linear(cfg.hidden_size, labels_num)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, src, seg):
        hidden = self.encoder(self.embedding(src, seg), seg)
        pooled = self.dropout(torch.tanh(self.output_layer_1(pool(hidden, seg, self.pooling))))
        if self.labels_num == 1:
            # A regression score is the output itself: under bf16 autocast it would keep ~3 significant
            # digits, and close scores would tie (a correlation metric then reads 0). Computed in fp32.
            with autocast(pooled.device, "fp32"):
                return self.output_layer_2(pooled.float())
        return self.output_layer_2(pooled)


class SpanQA(nn.Module):
    """Per-token hidden -> (start, end) logits; padding positions get a large negative score."""

    def __init__(self, cfg):
        super().__init__()
        self.embedding = build_embedding(cfg)
        self.encoder = build_encoder(cfg)
        self.output_layer = nn.Linear(cfg.hidden_size, 2)

    def forward(self, src, seg):
        hidden = self.encoder(self.embedding(src, seg), seg)
        logits = self.output_layer(hidden).float().masked_fill((seg == 0)[..., None], -10000.0)
        start, end = logits.unbind(-1)
        return start, end


# A converted BERT checkpoint's next-sentence head starts with Hugging Face's pooler;
# it is the natural initialisation of the classifier's pooler when the shapes agree.
_POOLER_FROM = {"output_layer_1.weight": "target.sp.linear_1.weight",
                "output_layer_1.bias": "target.sp.linear_1.bias"}


# Heads that callers outside the task modules (the WID demonstration) ask for by name.
NAMED_HEADS = {"classifier": lambda cfg, labels_num: Classifier(cfg, labels_num),
               "span": lambda cfg, labels_num: SpanQA(cfg)}


def build_task_model(cfg, head, labels_num=None, pretrained_model_path=None, log=print):
    """A task model, randomly initialised, then loaded from `pretrained_model_path` if given.

    A pre-training checkpoint may lack the task head (`output_layer*`) and may carry the
    pre-training targets (`target.*`); any other difference is an error. A fine-tuned
    checkpoint of the same task loads completely. `head` is the task model (a module with
    embedding/encoder/output_layer* keys, from a Task's build_model) or a name in NAMED_HEADS.
    """
    model = NAMED_HEADS[head](cfg, labels_num) if isinstance(head, str) else head
    init_weights(model)
    if pretrained_model_path:
        from tencentpretrain.model_io import load_state_dict_file
        sd = load_state_dict_file(pretrained_model_path)
        own = model.state_dict()
        pooled = {}
        for ours, theirs in _POOLER_FROM.items():
            if ours in own and ours not in sd and theirs in sd and sd[theirs].shape == own[ours].shape:
                pooled[ours] = sd[theirs]
        report = load_model_weights(model, {**sd, **pooled}, allow_missing=("output_layer",),
                                    allow_unexpected=("target.",), where=pretrained_model_path)
        head_new = [k for k in report.missing if k.startswith("output_layer")]
        note = " (pooler from target.sp.linear_1)" if pooled else ""
        log(f"loaded {pretrained_model_path}: {len(sd) - len(report.unexpected)} tensors; "
            f"new head: {', '.join(sorted({k.rsplit('.', 1)[0] for k in head_new})) or 'none'}{note}; "
            f"{len(report.unexpected)} pre-training keys ignored")
    return model
