"""One-shot magnitude pruning of a BERT to a smaller dense shape (the WID demo's baseline).

The dimensions that must go together are the same groups WID masks (see WID.md section 3):
    S     the residual stream: embedding tables' columns, every LayerNorm on the stream, the input
          columns of Q/K/V, FFN-in and the MLM head dense, the output rows of attention-out and FFN-out
    A.l   layer l's attention width: Q/K/V output rows, attention-out input columns
    F.l   layer l's FFN width: FFN-in output rows, FFN-out input columns
    M     the MLM head width; with tie_weights the decoder is the word table, so M is S
A coordinate's importance is the sum, over the weight matrices and embedding tables of its group, of
its slice's squared L2 norm divided by the tensor's squared norm (each tensor has the same say, so the
30k-row word table does not outvote the layers). The largest scores are kept, in their original order.

Attention, strategy "dim": every head keeps its `head_size` strongest dims (all heads kept, narrower);
strategy "head": the `heads_num` strongest heads are kept whole. With "dim" the student divides scores
by sqrt(new head size), so sqrt(new / old) is folded into W_q, b_q (as WID's merge does): the pruned
attention scores then equal the teacher's restricted to the kept dims.
"""
import math
import re
from dataclasses import dataclass, field

import torch

from tencentpretrain.errors import UserError

_LAYER = re.compile(r"^encoder\.transformer\.(\d+)\.(.+)$")
# Per-layer parameter -> (output-side group, input-side group); "S" stream, "A" attention, "F" FFN.
_LAYER_RULES = {
    "self_attn.linear_layers.0": ("A", "S"), "self_attn.linear_layers.1": ("A", "S"),
    "self_attn.linear_layers.2": ("A", "S"), "self_attn.final_linear": ("S", "A"),
    "feed_forward.linear_1": ("F", "S"), "feed_forward.linear_2": ("S", "F"),
    "layer_norm_1": ("S", None), "layer_norm_2": ("S", None),
}
_GLOBAL_RULES = {  # non-layer module -> (output-side group, input-side group)
    "embedding.layer_norm": ("S", None), "encoder.layer_norm": ("S", None),
    "target.mlm.linear_1": ("M", "S"), "target.mlm.layer_norm": ("M", None),
    "target.mlm.linear_2": (None, "M"),  # the vocabulary is never pruned
}
_TABLES = ("embedding.word.embedding.weight", "embedding.pos.embedding.weight", "embedding.seg.embedding.weight")


@dataclass
class PruneResult:
    state_dict: dict
    config: dict                                  # the student's model config (a dict, json-ready)
    kept: dict = field(default_factory=dict)      # group name ("S", "A.0", "F.0", "M") -> kept indices
    dropped_keys: list = field(default_factory=list)  # heads the student cannot keep (next-sentence)


def _rule(key):
    """(module, param, out_group, in_group) of a BERT key, groups suffixed with the layer (A.3)."""
    module, _, param = key.rpartition(".")
    m = _LAYER.match(module)
    if m:
        layer, local = m.groups()
        if local not in _LAYER_RULES:
            return None
        return module, param, *(g and (g if g == "S" else f"{g}.{layer}") for g in _LAYER_RULES[local])
    if key in _TABLES:
        return module, param, None, "S"  # [rows, H]: columns are the stream
    if module in _GLOBAL_RULES:
        return module, param, *_GLOBAL_RULES[module]
    return None


def _scores(sd, rules):
    """group -> importance per coordinate (normalised squared norms summed over the group's matrices)."""
    scores = {}
    for key, (_module, param, out_g, in_g) in rules.items():
        w = sd[key].double()
        if w.dim() != 2 or param != "weight":  # weight matrices and tables only: "weight magnitude"
            continue
        total = w.pow(2).sum().clamp_min(1e-30)
        for g, per in ((out_g, w.pow(2).sum(1)), (in_g, w.pow(2).sum(0))):
            if g is not None:
                scores[g] = scores.get(g, 0) + per / total
    return scores


def _top(score, k):
    return torch.sort(torch.topk(score, k).indices).values


def _attention_keep(score, heads, head_size, new_heads, new_head_size, strategy):
    per_head = score.view(heads, head_size)
    if strategy == "dim":
        keep = [h * head_size + _top(per_head[h], new_head_size) for h in range(heads)]
        return torch.cat(keep)
    kept_heads = _top(per_head.sum(1), new_heads)
    return (kept_heads[:, None] * head_size + torch.arange(head_size)).flatten()


def prune_state_dict(sd, cfg, hidden_size, feedforward_size=None, strategy="dim"):
    """Prune a BERT state dict (TencentPretrain keys) with config `cfg` (a ModelConfig) to `hidden_size`
    (residual stream and MLM head) and `feedforward_size` (default: scaled like the hidden size).

    strategy "dim" keeps all heads_num heads with hidden_size / heads_num dims each; "head" keeps
    hidden_size / head_size whole heads. Returns a PruneResult.
    """
    H, heads, d, F = cfg.hidden_size, cfg.heads_num, cfg.head_size, cfg.feedforward_size
    if cfg.emb_size != H:
        raise UserError(f"magnitude pruning needs emb_size == hidden_size (got {cfg.emb_size} and {H})")
    if heads * d != H:
        raise UserError(f"magnitude pruning needs heads_num * attention_head_size == hidden_size "
                        f"({heads} x {d} != {H})")
    if feedforward_size is None:
        feedforward_size = F * hidden_size // H
    if not 1 <= hidden_size <= H or not 1 <= feedforward_size <= F:
        raise UserError(f"target hidden {hidden_size} / feedforward {feedforward_size} must be between 1 and the "
                        f"model's {H} / {F}")
    if strategy == "dim":
        if hidden_size % heads:
            raise UserError(f"strategy 'dim' keeps all {heads} heads, so the hidden size must be a multiple of "
                            f"{heads}; {hidden_size} is not")
        new_heads, new_d = heads, hidden_size // heads
    elif strategy == "head":
        if hidden_size % d:
            raise UserError(f"strategy 'head' keeps whole heads of {d} dims, so the hidden size must be a "
                            f"multiple of {d}; {hidden_size} is not")
        new_heads, new_d = hidden_size // d, d
    else:
        raise UserError(f"strategy {strategy!r}: choose dim or head")

    rules, dropped, unknown = {}, [], []
    for key in sd:
        r = _rule(key)
        if r is not None:
            rules[key] = r
        elif key.startswith("target.sp."):
            dropped.append(key)  # the pooler/NSP head reads a width we do not track; MLM only
        else:
            unknown.append(key)
    if unknown:
        raise UserError(f"cannot prune keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}: only BERT "
                        f"encoders with an MLM head are supported (prune before fine-tuning)")
    scores = _scores(sd, rules)
    kept = {"S": _top(scores["S"], hidden_size)}
    for layer in range(cfg.layers_num):
        kept[f"A.{layer}"] = _attention_keep(scores[f"A.{layer}"], heads, d, new_heads, new_d, strategy)
        kept[f"F.{layer}"] = _top(scores[f"F.{layer}"], feedforward_size)
    if "M" in scores:
        # Tied decoder = word table, whose columns are the stream: the head must keep S's coordinates.
        kept["M"] = kept["S"] if cfg.tie_weights else _top(scores["M"], hidden_size)

    out = {}
    for key, (_module, param, out_g, in_g) in rules.items():
        w = sd[key]
        if out_g is not None:
            w = w.index_select(0, kept[out_g])
        if in_g is not None and w.dim() == 2:
            w = w.index_select(1, kept[in_g])
        out[key] = w.clone().contiguous()
    if strategy == "dim" and new_d != d:
        scale = math.sqrt(new_d / d)  # the student divides scores by sqrt(new_d) instead of sqrt(d)
        for layer in range(cfg.layers_num):
            for param in ("weight", "bias"):
                key = f"encoder.transformer.{layer}.self_attn.linear_layers.0.{param}"
                if key in out:
                    out[key] = out[key] * scale
    student = cfg.to_dict()
    student.pop("wid", None)
    student.update(hidden_size=hidden_size, emb_size=hidden_size, feedforward_size=feedforward_size,
                   heads_num=new_heads, target=[t for t in cfg.target if t != "sp"] or ["mlm"])
    student.pop("attention_head_size", None)
    return PruneResult(out, student, kept, dropped)


def prune_checkpoint(model_path, config_path, output_model_path, hidden_size, feedforward_size=None,
                     strategy="dim", output_config_path=None):
    """Files in, files out: the pruned weights and their config json. Returns (PruneResult, config path)."""
    import json

    from tencentpretrain.config import load_model_config
    from tencentpretrain.model_io import load_state_dict_file, save_state_dict
    from tencentpretrain.utils.io import atomic_write
    from tencentpretrain.wid.merge import student_config_path

    sd = load_state_dict_file(model_path)
    shapes = {"vocab_size": "embedding.word.embedding.weight", "max_seq_length": "embedding.pos.embedding.weight"}
    cfg = load_model_config(config_path, {k: sd[key].shape[0] for k, key in shapes.items() if key in sd})
    result = prune_state_dict(sd, cfg, hidden_size, feedforward_size, strategy)
    save_state_dict(result.state_dict, output_model_path)
    output_config_path = output_config_path or student_config_path(output_model_path)
    with atomic_write(output_config_path, "w", encoding="utf-8") as f:
        json.dump(result.config, f, indent=2)
        f.write("\n")
    return result, output_config_path
