"""Hugging Face BERT <-> this toolkit's BERT: key tables, state-dict conversion, config.json.

The key tables below are the whole mapping; the functions only walk them. Internally HF keys are
written without the base model's `bert.` prefix (a `BertModel` has none, the task models add it);
head keys (`cls.*`, `classifier.*`, `qa_outputs.*`) never carry it.

Two things are not renames:
- the segment table: HF has 2 rows (token_type 0, 1); ours has 3 (0 = padding, then segments 1, 2).
  Import copies HF row 0 into our padding row as well, so even the hidden states at padded
  positions equal what `transformers` computes (HF pads with token_type 0); export drops row 0.
- LayerNorm: HF is `nn.LayerNorm` ("normal_torch"). TencentPretrain's "normal" divides by the
  unbiased std plus eps; `rescale_layernorm` converts between them up to where eps sits.
"""
import math
import re
from dataclasses import dataclass, field

import torch

from tencentpretrain.errors import UserError

# (HF module, our module, kind). Kinds name the parameters each module has, see PARAMS.
EMBEDDING_TABLE = [
    ("embeddings.word_embeddings", "embedding.word.embedding", "table"),
    ("embeddings.position_embeddings", "embedding.pos.embedding", "table"),
    ("embeddings.token_type_embeddings", "embedding.seg.embedding", "table"),
    ("embeddings.LayerNorm", "embedding.layer_norm", "ln"),
]
LAYER_TABLE = [  # below encoder.layer.{L} (HF) / encoder.transformer.{L} (ours)
    ("attention.self.query", "self_attn.linear_layers.0", "linear"),
    ("attention.self.key", "self_attn.linear_layers.1", "linear"),
    ("attention.self.value", "self_attn.linear_layers.2", "linear"),
    ("attention.output.dense", "self_attn.final_linear", "linear"),
    ("attention.output.LayerNorm", "layer_norm_1", "ln"),
    ("intermediate.dense", "feed_forward.linear_1", "linear"),
    ("output.dense", "feed_forward.linear_2", "linear"),
    ("output.LayerNorm", "layer_norm_2", "ln"),
]
# The heads. The pooler belongs to whichever head uses it: next-sentence prediction (our
# target.sp.linear_1) or a sequence classifier (our output_layer_1).
HEAD_TABLES = {
    "mlm": [("cls.predictions.transform.dense", "target.mlm.linear_1", "linear"),
            ("cls.predictions.transform.LayerNorm", "target.mlm.layer_norm", "ln"),
            ("cls.predictions.decoder", "target.mlm.linear_2", "weight"),  # tied to the word table
            ("cls.predictions", "target.mlm.linear_2", "bias")],
    "sp": [("pooler.dense", "target.sp.linear_1", "linear"),
           ("cls.seq_relationship", "target.sp.linear_2", "linear")],
    "classifier": [("pooler.dense", "output_layer_1", "linear"),
                   ("classifier", "output_layer_2", "linear")],
    "qa": [("qa_outputs", "output_layer", "linear")],
}
PARAMS = {"linear": [("weight", "weight"), ("bias", "bias")],
          "ln": [("weight", "gamma"), ("bias", "beta")],
          "table": [("weight", "weight")],
          "weight": [("weight", "weight")],
          "bias": [("bias", "bias")]}
BASE_PREFIXES = ("embeddings.", "encoder.", "pooler.")  # the keys HF puts under `bert.`
# HF state dicts may carry these buffers; they hold no weights.
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# Tied duplicate in transformers 4.x state dicts: the same tensor as cls.predictions.bias.
DECODER_BIAS = "cls.predictions.decoder.bias"
SEG = "embedding.seg.embedding.weight"
WORD = "embedding.word.embedding.weight"
MLM_DECODER = "target.mlm.linear_2.weight"

ARCHITECTURES = {  # HF class -> the heads it has (besides the base model)
    "BertModel": (),
    "BertForMaskedLM": ("mlm",),
    "BertForPreTraining": ("mlm", "sp"),
    "BertForNextSentencePrediction": ("sp",),
    "BertForSequenceClassification": ("classifier",),
    "BertForQuestionAnswering": ("qa",),
}
HF_ACT_TO_OURS = {"gelu": "gelu", "gelu_new": "gelu_fast", "gelu_fast": "gelu_fast",
                  "gelu_pytorch_tanh": "gelu_fast", "relu": "relu", "silu": "silu", "swish": "silu"}
OUR_ACT_TO_HF = {"gelu": "gelu", "gelu_fast": "gelu_new", "relu": "relu", "silu": "silu"}


def _expand(table, hf_prefix="", our_prefix=""):
    """Module-level table rows -> {hf parameter key: our parameter key}."""
    out = {}
    for hf, ours, kind in table:
        for hf_p, our_p in PARAMS[kind]:
            out[f"{hf_prefix}{hf}.{hf_p}"] = f"{our_prefix}{ours}.{our_p}"
    return out


def key_map(layers_num, heads=()):
    """{HF key (no `bert.` prefix): our key} for the base model and the given heads."""
    out = _expand(EMBEDDING_TABLE)
    for layer in range(layers_num):
        out.update(_expand(LAYER_TABLE, f"encoder.layer.{layer}.", f"encoder.transformer.{layer}."))
    for head in heads:
        out.update(_expand(HEAD_TABLES[head]))
    return out


def _listing(keys, limit=10):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# ---- LayerNorm conventions ------------------------------------------------------------------
def _layernorm_keys(sd):
    return [k for k in sd if k.endswith(".gamma")]


def rescale_layernorm(sd, to):
    """Move an our-keyed state dict between the LayerNorm conventions (in place); returns it.

    "normal" computes g * (x - m) / (std_unbiased + eps) and std_unbiased = std * sqrt(n / (n - 1)),
    so g * sqrt((n - 1) / n) under nn.LayerNorm semantics gives the same output except for where
    eps sits (a relative difference of about eps / std, ~1e-6 for eps 1e-6 and unit-scale inputs).
    """
    for key in _layernorm_keys(sd):
        n = sd[key].numel()
        factor = math.sqrt((n - 1) / n)
        sd[key] = sd[key] * (factor if to == "normal_torch" else 1.0 / factor)
    return sd


def eps_between(eps, n, to):
    """The eps that best matches `eps` of the other convention (equal at zero variance)."""
    c = math.sqrt((n - 1) / n)
    return (eps * c) ** 2 if to == "normal_torch" else math.sqrt(eps) / c


# ---- Hugging Face -> ours ---------------------------------------------------------------------
@dataclass
class ImportReport:
    architecture: str
    heads: list
    layers_num: int
    target: list
    tie_weights: bool
    ignored: list = field(default_factory=list)  # buffers and tied duplicates, not weights
    dropped: list = field(default_factory=list)  # head keys left out on request (--target)
    notes: list = field(default_factory=list)


def _normalize_hf_keys(sd, where):
    """Strip `bert.`, rename legacy LayerNorm gamma/beta, and set aside buffers and duplicates."""
    out, ignored = {}, []
    for key, value in sd.items():
        name = key[len("bert."):] if key.startswith("bert.") else key
        name = re.sub(r"\.LayerNorm\.gamma$", ".LayerNorm.weight", name)
        name = re.sub(r"\.LayerNorm\.beta$", ".LayerNorm.bias", name)
        if name in IGNORED_BUFFERS:
            ignored.append(key)
            continue
        if name in out:
            raise UserError(f"{where}: key '{key}' appears both with and without the 'bert.' prefix")
        out[name] = value
    if DECODER_BIAS in out:
        bias = out.pop(DECODER_BIAS)
        if "cls.predictions.bias" not in out:
            out["cls.predictions.bias"] = bias
        elif not torch.equal(bias, out["cls.predictions.bias"]):
            raise UserError(f"{where}: '{DECODER_BIAS}' differs from 'cls.predictions.bias' "
                            f"(they are one tensor in BERT); this is not a BERT MLM head")
        else:
            ignored.append(DECODER_BIAS)
    return out, ignored


def detect_heads(keys):
    """The heads whose keys are present, and whether the pooler is."""
    has = lambda p: any(k.startswith(p) for k in keys)  # noqa: E731
    heads = [h for h, p in (("mlm", "cls.predictions."), ("sp", "cls.seq_relationship."),
                            ("classifier", "classifier."), ("qa", "qa_outputs.")) if has(p)]
    return heads, has("pooler.")


def _architecture(heads):
    for name, arch_heads in ARCHITECTURES.items():
        if tuple(heads) == arch_heads:
            return name
    return "+".join(heads)


def hf_to_tencentpretrain(sd, where="checkpoint", target=None, layernorm="normal_torch"):
    """A HF BERT state dict -> (our state dict, ImportReport).

    `target` (a list of "mlm"/"sp") keeps only those pre-training heads; None keeps every head
    present. Keys that are neither BERT weights nor known buffers are an error listing them.
    """
    hf, ignored = _normalize_hf_keys(sd, where)
    heads, has_pooler = detect_heads(hf)
    if "classifier" in heads and "sp" in heads:
        raise UserError(f"{where}: both a sequence classifier and a next-sentence head; "
                        f"the pooler cannot belong to both")
    layers = {int(m.group(1)) for k in hf if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if not layers:
        raise UserError(f"{where}: no 'encoder.layer.N.*' keys; is this a BERT checkpoint?")
    layers_num = max(layers) + 1
    pooler_head = "classifier" if "classifier" in heads else "sp"
    mapping = {k: v for k, v in key_map(layers_num, heads).items() if not k.startswith("pooler.")}
    if has_pooler:
        mapping.update(_expand(HEAD_TABLES[pooler_head][:1]))

    unknown = [k for k in hf if k not in mapping]
    if unknown:
        raise UserError(f"{where}: {len(unknown)} keys this converter does not know: {_listing(unknown)}. "
                        f"It converts BERT (BertModel, BertForMaskedLM, BertForPreTraining, "
                        f"BertForSequenceClassification, BertForQuestionAnswering); other "
                        f"architectures need their own mapping")
    base = key_map(layers_num)
    missing = [k for k in base if k not in hf]
    optional_missing = [k for k, v in mapping.items() if k not in hf and k not in base]
    # The MLM decoder is tied to the word table: HF leaves it out of its files.
    optional_missing = [k for k in optional_missing if k != "cls.predictions.decoder.weight"]
    if missing or optional_missing:
        raise UserError(f"{where}: incomplete checkpoint, missing {_listing(missing + optional_missing)}")

    out = {mapping[k]: v for k, v in hf.items()}
    seg = out[SEG]
    if seg.shape[0] != 2:
        raise UserError(f"{where}: token_type_embeddings has {seg.shape[0]} rows; BERT has 2 "
                        f"(segments A and B), which become our rows 1 and 2")
    out[SEG] = torch.cat([seg[:1], seg], 0)  # row 0 (padding) = HF's row 0, see module docstring

    report = ImportReport(_architecture(heads), heads, layers_num, [], True, ignored=ignored)
    if "mlm" in heads:
        if MLM_DECODER not in out:
            out[MLM_DECODER] = out[WORD].clone()
        report.tie_weights = bool(torch.equal(out[MLM_DECODER], out[WORD]))
    # The pre-training targets of our config: those present, or MLM for a bare encoder (the
    # usual next step is MLM training, which starts that head from scratch).
    report.target = list(target) if target else ([t for t in ("mlm", "sp") if t in heads] or ["mlm"])
    for t in ("mlm", "sp"):
        if t not in report.target:
            gone = [k for k in out if k.startswith(f"target.{t}.")]
            report.dropped += gone
            for k in gone:
                del out[k]
    if report.dropped:
        report.notes.append(f"left out (not in target {report.target}): {_listing(report.dropped, 4)}"
                            + ("; pass --target mlm,sp to keep the pooler as target.sp.linear_1"
                               if "target.sp.linear_1.weight" in report.dropped else ""))
    task_head = "classifier" in heads or "qa" in heads
    if "mlm" in report.target and "mlm" not in heads and not task_head:
        report.notes.append("no MLM head in the checkpoint (cls.predictions.*): target.mlm.* starts "
                            "from random weights when you train")
    if "sp" in report.target and "sp" not in heads and not task_head:
        what = "target.sp.linear_1 holds the pooler; " if has_pooler else ""
        report.notes.append(f"no next-sentence head (cls.seq_relationship.*): {what}target.sp.linear_2 "
                            f"starts from random weights when you train")
    if "classifier" in heads:
        report.notes.append(f"sequence classifier with {out['output_layer_2.weight'].shape[0]} labels: "
                            f"output_layer_1 (pooler) and output_layer_2, as finetune/run_classifier.py saves")
    if "qa" in heads:
        report.notes.append("span QA head: output_layer, as finetune/run_squad.py saves")
    if layernorm == "normal":
        rescale_layernorm(out, "normal")
        report.notes.append("warning: LayerNorm converted to TencentPretrain's ('normal') by rescaling the "
                            "gains; outputs match the HF model to about eps/std (~1e-6 relative), not exactly")
    return out, report


def config_from_hf(hf_cfg, report, layernorm="normal_torch", where="config.json"):
    """A HF BertConfig dict -> our model config dict (TencentPretrain key names)."""
    if not isinstance(hf_cfg, dict):
        raise UserError(f"{where}: expected a JSON object (a BertConfig), got {type(hf_cfg).__name__}")
    model_type = hf_cfg.get("model_type", "bert")
    if model_type != "bert":
        raise UserError(f"{where}: model_type is '{model_type}'; this converter handles 'bert'")
    for key, want in (("position_embedding_type", "absolute"), ("type_vocab_size", 2), ("is_decoder", False)):
        if hf_cfg.get(key, want) != want:
            raise UserError(f"{where}: {key} is {hf_cfg[key]!r}; only {want!r} converts to this toolkit's BERT")
    act = hf_cfg.get("hidden_act", "gelu")
    if act not in HF_ACT_TO_OURS:
        raise UserError(f"{where}: hidden_act '{act}' has no equivalent here; "
                        f"supported: {', '.join(HF_ACT_TO_OURS)}")
    needed = ("hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings", "vocab_size")
    missing = [k for k in needed if k not in hf_cfg]
    if missing:
        raise UserError(f"{where}: no {', '.join(missing)}; a BertConfig config.json states "
                        f"{', '.join(needed)}")
    bad = [k for k in needed if not isinstance(hf_cfg[k], int) or isinstance(hf_cfg[k], bool) or hf_cfg[k] < 1]
    if bad:
        raise UserError(f"{where}: {', '.join(f'{k} is {hf_cfg[k]!r}' for k in bad)}; sizes are positive integers")
    hidden = hf_cfg["hidden_size"]
    hf_eps = hf_cfg.get("layer_norm_eps", 1e-12)
    eps = hf_eps if layernorm == "normal_torch" else eps_between(hf_eps, hidden, "normal")
    if hf_cfg.get("num_hidden_layers", report.layers_num) != report.layers_num:
        raise UserError(f"{where}: num_hidden_layers is {hf_cfg['num_hidden_layers']} but the "
                        f"weights have {report.layers_num} layers")
    return {
        "emb_size": hidden, "hidden_size": hidden, "feedforward_size": hf_cfg["intermediate_size"],
        "heads_num": hf_cfg["num_attention_heads"], "layers_num": report.layers_num,
        "max_seq_length": hf_cfg["max_position_embeddings"],
        "dropout": hf_cfg.get("hidden_dropout_prob", 0.1), "hidden_act": HF_ACT_TO_OURS[act],
        "embedding": ["word", "pos", "seg"], "encoder": "transformer", "mask": "fully_visible",
        "layernorm_positioning": "post", "layernorm": layernorm, "layernorm_eps": eps,
        "target": report.target, "tie_weights": report.tie_weights,
        "vocab_size": hf_cfg["vocab_size"], "data_processor": "bert",
    }


# ---- the sizes a config.json states and its weights show -------------------------------------------
# HF config key: (our config key, what shows it, its key without `bert.`, the axis of that tensor).
SIZES = {
    "vocab_size": ("vocab_size", "the word embedding table", "embeddings.word_embeddings.weight", 0),
    "hidden_size": ("hidden_size", "the word embedding table", "embeddings.word_embeddings.weight", 1),
    "max_position_embeddings": ("max_seq_length", "the position table", "embeddings.position_embeddings.weight", 0),
    "intermediate_size": ("feedforward_size", "layer 0's feed-forward", "encoder.layer.0.intermediate.dense.weight",
                          0),
}


def size_mismatches(hf_cfg, hf_sd, our_names=False):
    """The sizes of a HF BERT config dict that its weights (HF keys) contradict, as readable phrases:
    "hidden_size 256 in the config, 128 in the weights (the word embedding table is [60, 128])".

    Both converters call it before writing, so a config.json never contradicts its weights.
    `our_names` names the keys as this toolkit's config does (for an export's --config_path).
    """
    sd = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in hf_sd.items()}
    out = []
    for key, (ours, what, tensor, axis) in SIZES.items():
        if tensor not in sd or key not in hf_cfg:
            continue
        shape = list(sd[tensor].shape)
        if hf_cfg[key] != shape[axis]:
            out.append(f"{ours if our_names else key} {hf_cfg[key]} in the config, {shape[axis]} in the weights "
                       f"({what} is {shape})")
    return out


# ---- ours -> Hugging Face ---------------------------------------------------------------------
def _check_exportable(cfg, strict_layernorm=False):
    if cfg.wid is not None or cfg.encoder.startswith("wid") or any(t.startswith("wid") for t in cfg.target):
        raise UserError("this is a WID training config (compactors and masks): merge the checkpoint first "
                        "with scripts/merge_compactors.py, then export the student with its config")
    problems = []
    if cfg.layernorm_positioning != "post":
        problems.append("layernorm_positioning is 'pre'; HF BERT is post-LN")
    if cfg.emb_size != cfg.hidden_size:
        problems.append(f"emb_size {cfg.emb_size} != hidden_size {cfg.hidden_size} (factorised embeddings)")
    if cfg.head_size * cfg.heads_num != cfg.hidden_size:
        problems.append(f"heads_num x head size = {cfg.heads_num} x {cfg.head_size} != hidden_size "
                        f"{cfg.hidden_size}")
    if list(cfg.embedding) != ["word", "pos", "seg"]:
        problems.append(f"embedding is {cfg.embedding}; HF BERT has [word, pos, seg]")
    if cfg.encoder != "transformer" or cfg.mask != "fully_visible" or cfg.decoder is not None:
        problems.append("not a bidirectional transformer encoder without decoder")
    if cfg.remove_embedding_layernorm:
        problems.append("remove_embedding_layernorm is set; HF BERT has an embedding LayerNorm")
    if cfg.hidden_act not in OUR_ACT_TO_HF:
        problems.append(f"hidden_act '{cfg.hidden_act}' has no HF name")
    if problems:
        raise UserError("this model cannot be written as a Hugging Face BERT: " + "; ".join(problems))
    if cfg.layernorm == "normal" and strict_layernorm:
        raise UserError(
            "this model uses TencentPretrain's LayerNorm (layernorm 'normal': unbiased std, eps outside "
            "the square root); HF BERT uses nn.LayerNorm, and --strict_layernorm refuses the export. "
            "Leave out --strict_layernorm to export it with the LayerNorm gains rescaled by sqrt((n-1)/n) "
            "(the measured difference is printed); models trained with layernorm 'normal_torch' export exactly.")


def tencentpretrain_to_hf(sd, cfg, architecture=None, strict_layernorm=False, where="checkpoint"):
    """Our state dict + ModelConfig -> (HF state dict with canonical prefixes, HF config dict, notes).

    A model with TencentPretrain's LayerNorm ('normal') is written with its gains rescaled (see
    `rescale_layernorm`) unless `strict_layernorm`, which refuses it instead.
    """
    _check_exportable(cfg, strict_layernorm)
    notes = []
    heads = [h for h, p in (("mlm", "target.mlm."), ("sp", "target.sp."), ("classifier", "output_layer_2."),
                            ("qa", "output_layer.")) if any(k.startswith(p) for k in sd)]
    chosen = architecture is not None
    if architecture is None:
        architecture = _architecture(heads)
        if architecture not in ARCHITECTURES:
            raise UserError(f"{where}: heads {heads} do not form one HF architecture; choose one with "
                            f"--architecture ({', '.join(ARCHITECTURES)})")
    elif architecture not in ARCHITECTURES:
        raise UserError(f"unknown architecture '{architecture}'; choose one of: {', '.join(ARCHITECTURES)}")
    want = list(ARCHITECTURES[architecture])
    missing_heads = [h for h in want if h not in heads]
    if missing_heads:
        raise UserError(f"{where}: {architecture} needs the {', '.join(missing_heads)} head(s), "
                        f"which the checkpoint does not have (it has: {', '.join(heads) or 'none'})")
    # A bare encoder keeps the pooler when there is one (target.sp.linear_1), as BertModel has.
    pooler = [] if want else [h for h in heads if h in ("sp", "classifier")][:1]
    mapping = {v: k for k, v in key_map(cfg.layers_num, want).items()}
    for head in pooler:
        mapping.update({v: k for k, v in _expand(HEAD_TABLES[head][:1]).items()})
    dropped = [k for k in sd if k not in mapping and k.startswith(("target.", "output_layer"))]
    unknown = [k for k in sd if k not in mapping and k not in dropped]
    if unknown:
        hint = " (a WID checkpoint with compactors: merge it first with scripts/merge_compactors.py)" \
            if any("compactor" in k for k in unknown) else ""
        raise UserError(f"{where}: {len(unknown)} keys have no HF BERT name: {_listing(unknown)}{hint}")
    if dropped and not chosen:
        raise UserError(f"{where}: {architecture} has no place for {_listing(dropped)}; pass "
                        f"--architecture to choose which heads to write")
    if dropped:
        notes.append(f"left out {len(dropped)} head keys: {_listing(dropped, 4)}")
    missing = [k for k in mapping if k not in sd and k != MLM_DECODER]
    if missing:
        raise UserError(f"{where}: missing {_listing(missing)}; does --config_path match the checkpoint?")

    sd = {k: v for k, v in sd.items() if k in mapping}
    eps = cfg.eps
    if cfg.layernorm == "normal":
        sd = rescale_layernorm(dict(sd), "normal_torch")
        eps = eps_between(cfg.eps, cfg.hidden_size, "normal_torch")
        notes.append("warning: TencentPretrain's LayerNorm ('normal') exported as nn.LayerNorm with the "
                     f"gains rescaled by sqrt((n-1)/n) and eps {cfg.eps:g} -> {eps:.3g} (inside the square "
                     "root); only where eps sits differs")
    tied = True
    if "mlm" in want:
        decoder = sd.get(MLM_DECODER, sd[WORD])
        tied = bool(torch.equal(decoder, sd[WORD]))
        if tied:
            sd.pop(MLM_DECODER, None)  # HF ties it to the word table itself
    out = {}
    prefix = "" if architecture == "BertModel" else "bert."
    for ours, theirs in mapping.items():
        if ours not in sd:
            continue
        value = sd[ours]
        if ours == SEG:
            value = value[1:]  # our row 0 is padding; HF has segments A, B only
        out[(prefix + theirs) if theirs.startswith(BASE_PREFIXES) else theirs] = value
    hf_cfg = {
        "architectures": [architecture], "model_type": "bert",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.layers_num, "num_attention_heads": cfg.heads_num,
        "intermediate_size": cfg.feedforward_size, "hidden_act": OUR_ACT_TO_HF[cfg.hidden_act],
        "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
        "max_position_embeddings": cfg.max_seq_length, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": eps, "pad_token_id": 0,
        "position_embedding_type": "absolute", "tie_word_embeddings": tied,
    }
    if "classifier" in want:
        labels = sd["output_layer_2.weight"].shape[0]
        hf_cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
        hf_cfg["label2id"] = {f"LABEL_{i}": i for i in range(labels)}
        if labels == 1:
            hf_cfg["problem_type"] = "regression"
    return out, hf_cfg, notes
