"""The `kd` block of a student's model config, and the layer plan it asks of a teacher.

A KD student config is a plain BERT config (the student's shape) plus this block. The block names the
teacher and weighs the loss terms; the three task-agnostic recipes are settings of the same terms
(models/kd/*.json):

    DistilBERT   logits (soft targets at `temperature`), mlm, cosine
    TinyBERT     hidden_mse and attention_mse over `layer_map` (general distillation)
    MiniLM       attention_kl and value_relation_kl from `teacher_layer` to the student's last layer
                 (MiniLMv2: query_relation_kl, key_relation_kl, value_relation_kl with relation_heads)

`KdConfig.from_dict` checks the block alone; `plan` checks it against the student and teacher shapes.
"""
import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import List, Optional, Union

from tencentpretrain.errors import UserError

# Loss weights, in the order they are reported (kd_<name> in the progress line).
TERMS = ("logits", "cosine", "hidden_mse", "attention_mse", "attention_kl", "query_relation_kl",
         "key_relation_kl", "value_relation_kl")
# The relation terms and the per-head tensors each relates: softmax(x y^T / sqrt(d)).
RELATIONS = {"attention_kl": ("query", "key"), "query_relation_kl": ("query", "query"),
             "key_relation_kl": ("key", "key"), "value_relation_kl": ("value", "value")}


@dataclass
class KdConfig:
    teacher_model_path: Optional[str] = None   # the teacher's weights (or --teacher_model_path)
    teacher_config_path: Optional[str] = None  # None: the config beside the weights (<stem>_config.json)
    mlm: float = 0.0               # the student's own pre-training loss (its targets: MLM, plus NSP with sp)
    logits: float = 0.0            # KL(teacher || student) of the MLM distributions at `temperature`, x T^2
    temperature: float = 1.0
    cosine: float = 0.0            # 1 - cos(student, teacher) of the last hidden states
    hidden_mse: float = 0.0        # MSE of the hidden states (embeddings included) along layer_map
    attention_mse: float = 0.0     # MSE of the attention scores (before softmax) along layer_map
    layer_map: Union[str, List[int]] = "uniform"  # or the teacher hidden state of each student one, 0..M
    attention_kl: float = 0.0      # KL of the attention distributions, teacher_layer -> last student layer
    query_relation_kl: float = 0.0  # KL of softmax(Q Q^T / sqrt(d)) (MiniLMv2)
    key_relation_kl: float = 0.0    # KL of softmax(K K^T / sqrt(d)) (MiniLMv2)
    value_relation_kl: float = 0.0  # KL of softmax(V V^T / sqrt(d)) (MiniLM)
    teacher_layer: Optional[int] = None   # the teacher layer (1-based) of the relation terms; None: the last
    relation_heads: Optional[int] = None  # None: the attention heads (student and teacher must agree)
    teacher_bf16: Union[bool, str] = "auto"  # "auto": bf16 when the run is --bf16 or on a bf16 GPU

    @classmethod
    def from_dict(cls, d, where="kd block"):
        """The block as a config file holds it. Relative teacher paths are relative to the config file's
        folder (when `where` is that file), so a config works from any directory."""
        if isinstance(d, KdConfig):
            return d
        if not isinstance(d, dict):
            raise UserError(f"{where}: key 'kd' must be an object of distillation settings, got {d!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserError(f"{where}: unknown key 'kd.{key}'{hint}")
        cfg = cls(**d)
        base = os.path.dirname(os.path.abspath(where)) if os.path.isfile(where) else None
        for name in ("teacher_model_path", "teacher_config_path"):
            path = getattr(cfg, name)
            if path is not None and not isinstance(path, str):
                raise UserError(f"{where}: 'kd.{name}' must be a path (a string), got {path!r}")
            if path and base and not os.path.isabs(path):
                setattr(cfg, name, os.path.join(base, path))
        return cfg.check(where)

    def check(self, where="kd block"):
        for name in TERMS + ("mlm", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UserError(f"{where}: 'kd.{name}' must be a number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if self.temperature <= 0:
            raise UserError(f"{where}: 'kd.temperature' must be > 0, got {self.temperature}")
        if not any(getattr(self, t) for t in TERMS):
            raise UserError(f"{where}: no distillation term has a weight; set at least one of "
                            f"{', '.join('kd.' + t for t in TERMS)} above 0 (see models/kd/*.json)")
        if self.layer_map != "uniform" and not (isinstance(self.layer_map, list) and self.layer_map and all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layer_map)):
            raise UserError(f"{where}: 'kd.layer_map' must be \"uniform\" or a list of teacher hidden-state "
                            f"indices (0 = embeddings), one per student state 0..layers_num; got {self.layer_map!r}")
        for name in ("teacher_layer", "relation_heads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{where}: 'kd.{name}' must be an integer >= 1 or null, got {value!r}")
        if self.teacher_bf16 not in (True, False, "auto"):
            raise UserError(f"{where}: 'kd.teacher_bf16' must be true, false or \"auto\", got {self.teacher_bf16!r}")
        return self

    def weights(self):
        """The terms switched on: name -> weight."""
        return {t: getattr(self, t) for t in TERMS if getattr(self, t)}

    def to_dict(self):
        """None: KD is how a student is trained, not part of it, so a config written out (the one pretrain.py
        records beside the student's weights) is the plain student's and loads as a plain BERT."""
        return None

    def settings(self):
        """The block as a dict (for logs and the training state)."""
        return dataclasses.asdict(self)


@dataclass
class LayerPlan:
    """Which states of the student (s) and teacher (t) each term compares."""
    hidden_pairs: list      # [(s, t)] hidden-state indices for hidden_mse, 0 = embeddings
    cosine_pair: tuple      # (s, t) last hidden states for cosine, or None
    attention_pairs: list   # [(s, t)] layers, 1-based
    relation_layers: tuple  # (s, t) for the relation terms, or None
    relation_heads: int     # for the relation terms
    projection: tuple       # (student hidden, teacher hidden) of the learned projection, or None


def uniform_map(student_layers, teacher_layers, where):
    if teacher_layers % student_layers:
        raise UserError(f"{where}: kd.layer_map \"uniform\" needs the teacher's layers ({teacher_layers}) to be a "
                        f"multiple of the student's ({student_layers}); give kd.layer_map as a list of "
                        f"{student_layers + 1} teacher hidden-state indices instead, e.g. "
                        f"{[round(m * teacher_layers / student_layers) for m in range(student_layers + 1)]}")
    k = teacher_layers // student_layers
    return [m * k for m in range(student_layers + 1)]


def plan(kd, student, teacher, where="kd block"):
    """The LayerPlan for `kd` between the `student` and `teacher` ModelConfigs, or a UserError naming
    the mismatch and the fix."""
    M, N = student.layers_num, teacher.layers_num
    hidden_pairs, attention_pairs, relation, projection = [], [], None, None
    if kd.hidden_mse or kd.attention_mse:
        layer_map = uniform_map(M, N, where) if kd.layer_map == "uniform" else kd.layer_map
        if len(layer_map) != M + 1 or max(layer_map) > N:
            raise UserError(f"{where}: kd.layer_map {layer_map} must give one teacher hidden state (0..{N}) for "
                            f"each of the student's {M + 1} states (0 = embeddings, then layers 1..{M})")
        if kd.hidden_mse:
            hidden_pairs = list(enumerate(layer_map))
        if kd.attention_mse:
            if student.heads_num != teacher.heads_num:
                raise UserError(f"{where}: kd.attention_mse compares attention scores head by head, so the student "
                                f"needs the teacher's heads_num ({teacher.heads_num}, not {student.heads_num}); "
                                f"use a relation term (kd.attention_kl with kd.relation_heads) instead")
            if 0 in layer_map[1:]:
                raise UserError(f"{where}: kd.layer_map maps a student layer to the teacher's embeddings (0), "
                                f"which have no attention; kd.attention_mse needs layers 1..{N} there")
            attention_pairs = [(m, layer_map[m]) for m in range(1, M + 1)]
    cosine_pair = (M, N) if kd.cosine else None
    heads = kd.relation_heads
    if any(getattr(kd, t) for t in RELATIONS):
        t_layer = kd.teacher_layer or N
        if t_layer > N:
            raise UserError(f"{where}: kd.teacher_layer {t_layer}: the teacher has layers 1..{N}")
        relation = (M, t_layer)
        if heads is None:
            if student.heads_num != teacher.heads_num:
                raise UserError(f"{where}: the student has {student.heads_num} attention heads and the teacher "
                                f"{teacher.heads_num}; set kd.relation_heads (MiniLMv2's relation heads, a divisor "
                                f"of both attention widths) to compare them")
            heads = student.heads_num
        for who, cfg in (("student", student), ("teacher", teacher)):
            width = cfg.heads_num * cfg.head_size
            if width % heads:
                raise UserError(f"{where}: kd.relation_heads {heads} does not divide the {who}'s attention width "
                                f"{width} ({cfg.heads_num} heads x {cfg.head_size})")
    if hidden_pairs or cosine_pair:
        projection = (student.hidden_size, teacher.hidden_size)
    return LayerPlan(hidden_pairs, cosine_pair, attention_pairs, relation, heads, projection)
