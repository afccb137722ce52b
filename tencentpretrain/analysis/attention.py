"""Does a student attend like its teacher? Per student layer, the Jensen-Shannon divergence between its
attention distributions and those of the teacher layer it stands for, on the same held-out text.

    batches = dataset_batches("eval.tpd", batch_size=16, max_instances=64, seq_length=128)
    result = attention_divergence(teacher, {"wid": wid_student, "random": random_student}, batches)
    result["models"]["wid"]["js"]   # one value per student layer, in nats: 0 (the same) .. ln 2

The layer map is knowledge distillation's uniform one (kd/config.uniform_map): student layer l of M stands
for teacher layer l * N / M. A row of attention is one query's distribution over the keys; its JS
divergence (natural log) is symmetric, finite, in [0, ln 2], and exactly 0 when the rows agree. The mean
runs over heads and over real (non-padding) query positions, with keys restricted to real positions.
When the student has another number of heads than the teacher (WID's `head` strategy keeps fewer),
heads cannot be paired, so the head-averaged distributions are compared ("heads": "averaged");
otherwise head h with head h ("per-head"), and each head's value is kept too.
"""
import math
import os

import torch

from tencentpretrain.constants import IGNORE_INDEX
from tencentpretrain.data.loader import DataLoader
from tencentpretrain.errors import UserError
from tencentpretrain.kd.config import uniform_map
from tencentpretrain.layers.capture import Capture

MAX_JS = math.log(2)  # the largest JS divergence in nats (two distributions with disjoint supports)


# ---------------------------------------------------------------- the divergence
def js_divergence(p, q):
    """JS(p, q) of each row (last axis) of two probability tensors, in float64 and nats. Exactly 0 where
    p == q; a zero probability contributes nothing (0 log 0 = 0)."""
    p, q = p.double(), q.double()
    m = (p + q) / 2
    return ((_kl(p, m) + _kl(q, m)) / 2).clamp_min(0.0)


def _kl(p, m):
    """KL(p || m) per row, for m = (p + q) / 2: m > 0 wherever p > 0, so every log taken is finite."""
    ratio = torch.where(p > 0, p / m, torch.ones_like(p))
    return (p * ratio.log()).sum(-1)


def layer_map(student_layers, teacher_layers, name="student"):
    """The teacher layer (1-based) each student layer 1..M is compared with: KD's uniform map."""
    if student_layers > teacher_layers or teacher_layers % student_layers:
        raise UserError(f"model '{name}' has {student_layers} layers and the teacher {teacher_layers}: the uniform "
                        f"layer map (student layer l -> teacher layer l x {teacher_layers}/{student_layers}) needs "
                        f"the teacher's layer count to be a multiple of the student's")
    return uniform_map(student_layers, teacher_layers, name)[1:]


# ---------------------------------------------------------------- held-out text
def dataset_batches(path, batch_size, max_instances, seq_length, seed=7):
    """(src, seg) batches of the first `max_instances` instances of a preprocess.py dataset, in file order,
    cut to `seq_length`. MLM datasets are read unmasked: the masked positions get their original tokens
    back (tgt_mlm), so every model sees the real text."""
    if not os.path.isfile(path):
        raise UserError(f"dataset not found: {path} (make one with preprocess.py, or pass a text file)")
    loader = DataLoader(path, batch_size, seed=seed, shuffle=False)
    n = min(max_instances, loader.instances_num)
    batches = []
    for start in range(0, n, batch_size):
        batch = loader.collate(range(start, min(start + batch_size, n)))
        src = batch["src"]
        if "tgt_mlm" in batch:
            src = torch.where(batch["tgt_mlm"] != IGNORE_INDEX, batch["tgt_mlm"], src)
        batches.append((src[:, :seq_length], batch["seg"][:, :seq_length]))
    return batches


def text_batches(path, tokenizer, batch_size, max_instances, seq_length):
    """(src, seg) batches from a text file, one paragraph per line (blank lines skipped): each line
    becomes [CLS] tokens [SEP], cut to `seq_length`; a batch is padded to its longest line."""
    if not os.path.isfile(path):
        raise UserError(f"text file not found: {path}")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if len(rows) >= max_instances:
                break
            if line.strip():
                ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line.strip()))[: seq_length - 2]
                rows.append([tokenizer.cls_id, *ids, tokenizer.sep_id])
    if not rows:
        raise UserError(f"{path} has no non-blank line to read")
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        length = max(map(len, chunk))
        src = torch.full((len(chunk), length), tokenizer.pad_id, dtype=torch.long)
        seg = torch.zeros((len(chunk), length), dtype=torch.long)
        for i, ids in enumerate(chunk):
            src[i, :len(ids)] = torch.tensor(ids)
            seg[i, :len(ids)] = 1
        batches.append((src, seg))
    return batches


# ---------------------------------------------------------------- the measurement
def _check(teacher, students, batches):
    if not batches:
        raise UserError("no held-out text to compare the attention on (0 instances)")
    top = max(int(src.max()) for src, _ in batches)
    length = max(src.shape[1] for src, _ in batches)
    for name, model in {"teacher": teacher, **students}.items():
        cfg = model.cfg
        if "wid" in cfg.features:  # (a kd block only says how a plain model was trained)
            raise UserError(f"model '{name}' is a WID model with compactors; merge it first with "
                            f"scripts/merge_compactors.py and compare the dense student")
        if cfg.vocab_size != teacher.cfg.vocab_size:
            raise UserError(f"model '{name}' has a vocabulary of {cfg.vocab_size} tokens and the teacher "
                            f"{teacher.cfg.vocab_size}; the student must read the teacher's vocabulary")
        if top >= cfg.vocab_size:
            raise UserError(f"the held-out text has token id {top}, outside model '{name}''s vocabulary of "
                            f"{cfg.vocab_size}; make the dataset (or pass --vocab_path) with the models' vocabulary")
        if length > cfg.max_seq_length:
            raise UserError(f"model '{name}' takes at most {cfg.max_seq_length} tokens, the held-out text has "
                            f"{length}; lower --seq_length")


def _rows(record, valid):
    """Attention probabilities [B, heads, L, L] in float64, keys restricted to the real positions."""
    probs = record.probs(torch.float64) * valid[:, None, None, :]
    return probs / probs.sum(-1, keepdim=True)


@torch.inference_mode()
def attention_divergence(teacher, students, batches, layer_map_of="uniform"):
    """Mean JS divergence per student layer between each student's attention and the teacher's.

    `students` is {name: model}; `batches` a list of (src, seg) LongTensors (segment 0 = padding);
    `layer_map_of` "uniform" (see layer_map) or {name: [teacher layer per student layer]}. Returns
    {"teacher": {...}, "instances", "tokens", "unit", "models": {name: {"layers", "heads_num",
    "teacher_layers", "heads" ("per-head" or "averaged"), "js" [per layer], "js_per_head" [per layer
    [per head]] or None, "mean"}}}."""
    _check(teacher, students, batches)
    t_cfg = teacher.cfg
    maps = {name: layer_map(m.cfg.layers_num, t_cfg.layers_num, name) if layer_map_of == "uniform"
            else list(layer_map_of[name]) for name, m in students.items()}
    paired = {name: m.cfg.heads_num == t_cfg.heads_num for name, m in students.items()}
    sums = {name: torch.zeros(len(maps[name]), t_cfg.heads_num if paired[name] else 1, dtype=torch.float64)
            for name in students}
    captures = {"teacher": Capture(teacher.eval(), attention=range(1, t_cfg.layers_num + 1))}
    captures.update({name: Capture(m.eval(), attention=range(1, m.cfg.layers_num + 1))
                     for name, m in students.items()})
    tokens = instances = 0
    try:
        for src, seg in batches:
            valid = seg > 0
            for model in (teacher, *students.values()):
                model.encode(src, seg)
            for name in students:
                for i, t_layer in enumerate(maps[name]):
                    p_t = _rows(captures["teacher"].attention[t_layer], valid)
                    p_s = _rows(captures[name].attention[i + 1], valid)
                    if not paired[name]:
                        p_t, p_s = p_t.mean(1, keepdim=True), p_s.mean(1, keepdim=True)
                    js = js_divergence(p_t, p_s)  # [B, heads, L]
                    sums[name][i] += js.transpose(1, 2)[valid].sum(0)
            tokens += int(valid.sum())
            instances += src.shape[0]
    finally:
        for capture in captures.values():
            capture.close()
    models = {}
    for name, model in students.items():
        per_head = sums[name] / tokens
        js = per_head.mean(1).tolist()
        models[name] = {"layers": model.cfg.layers_num, "heads_num": model.cfg.heads_num,
                        "teacher_layers": maps[name], "heads": "per-head" if paired[name] else "averaged",
                        "js": js, "js_per_head": per_head.tolist() if paired[name] else None,
                        "mean": sum(js) / len(js)}
    return {"teacher": {"layers": t_cfg.layers_num, "heads_num": t_cfg.heads_num}, "instances": instances,
            "tokens": tokens, "unit": f"nats (JS divergence, natural log: 0 = the same, {MAX_JS:.4f} = ln 2 = "
                                      f"disjoint)", "models": models}
