"""The `wid` block of a model config, and the geometry it asks of a teacher.

A WID model config is a BERT config whose encoder is "wid_transformer", whose target is
["wid_mlm"], plus this block. `WidConfig.from_dict` validates the block alone; `plan_geometry`
checks it against the teacher's shape and refuses widths the strategy cannot reach exactly,
naming the nearest reachable ones.
"""
import dataclasses
import difflib
import typing
from dataclasses import dataclass
from typing import Optional

from tencentpretrain.errors import UserError
from tencentpretrain.wid.strategies import get_strategy, strategy_names

IMPORTANCE = ("group", "reference")
FOLDS = ("auto", "weights", "activations")
# The reference code's flag names, accepted as keys too.
ALIASES = {"target_dim": "target_hidden_size", "compactor_mask_strategy": "strategy"}


@dataclass
class WidConfig:
    target_hidden_size: int                      # student width of the residual stream (and MLM head)
    target_feedforward_size: Optional[int] = None  # None: teacher FFN scaled like the hidden size
    strategy: str = "dim"                        # dim: narrower heads; head: fewer heads
    w_step: int = 1000                           # optimizer steps between mask updates
    ffn_stages: int = 16                         # FFN and MLM head reach their target in this many updates
    attention_stages: int = 8                    # `dim`: stream/attention stages ("head": one head per stage)
    attention_stage_interval: int = 2            # mask updates between two stream/attention stages
    l2_lambda: float = 20.0                      # pull on masked entries: w *= 1 - lr_c * l2_lambda per step
    compactor_learning_rate: float = 5e-5
    compactor_weight_decay: Optional[float] = None  # None: the run's --weight_decay
    importance: str = "group"                    # group: norms summed over every compactor of a group
    fold: str = "auto"                           # how compactors are applied, see compactor.py
    zero_below: float = 1e-3                     # a masked dim decayed below this is set to exactly 0 ("dead")
    mask_path: Optional[str] = None              # JSON-lines mask log; None: <output_model_path>.masks.jsonl
    pre_mask_l2: float = 0.0                     # before the first mask update, grad += pre_mask_l2 * w on
                                                 # every compactor (the reference: 1.0)
    compactors_only: bool = False                # train the compactors only; the teacher's weights frozen
    print_updates: bool = False                  # print the kept widths at every mask update

    @classmethod
    def from_dict(cls, d, where="wid block"):
        if isinstance(d, WidConfig):
            return d
        if not isinstance(d, dict):
            raise UserError(f"{where}: key 'wid' must be an object of WID settings, got {d!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in d.items():
            name = ALIASES.get(key, key)
            if name not in fields:
                close = difflib.get_close_matches(key, list(fields) + list(ALIASES), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserError(f"{where}: unknown key 'wid.{key}'{hint}")
            values[name] = value
        if "target_hidden_size" not in values:
            raise UserError(f"{where}: the wid block needs 'target_hidden_size' (the student's hidden size)")
        for name, value in values.items():
            values[name] = _coerce(name, value, fields[name].type, where)
        cfg = cls(**values)
        cfg.check(where)
        return cfg

    def check(self, where="wid block"):
        for name in ("target_hidden_size", "w_step", "ffn_stages", "attention_stages", "attention_stage_interval"):
            if getattr(self, name) < 1:
                raise UserError(f"{where}: 'wid.{name}' must be at least 1, got {getattr(self, name)}")
        if self.target_feedforward_size is not None and self.target_feedforward_size < 1:
            raise UserError(f"{where}: 'wid.target_feedforward_size' must be at least 1")
        for name, choices in (("strategy", strategy_names()), ("importance", IMPORTANCE), ("fold", FOLDS)):
            if getattr(self, name) not in choices:
                raise UserError(f"{where}: 'wid.{name}' is '{getattr(self, name)}'; choose one of: "
                                f"{', '.join(choices)}")
        if self.l2_lambda < 0 or self.compactor_learning_rate <= 0:
            raise UserError(f"{where}: 'wid.l2_lambda' must be >= 0 and 'wid.compactor_learning_rate' > 0")
        if self.pre_mask_l2 < 0:
            raise UserError(f"{where}: 'wid.pre_mask_l2' must be >= 0, got {self.pre_mask_l2}")
        if not 0.0 <= self.zero_below < 1.0:
            raise UserError(f"{where}: 'wid.zero_below' must be in [0, 1), got {self.zero_below}")
        return self

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _coerce(name, value, tp, where):
    args = [a for a in typing.get_args(tp) if a is not type(None)]  # Optional[X] -> X
    if args:
        if value is None:
            return None
        tp = args[0]
    if tp is bool and not isinstance(value, bool):
        raise UserError(f"{where}: 'wid.{name}' must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"{where}: 'wid.{name}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: 'wid.{name}' must be a number, got {value!r}")
        value = float(value)
    if tp is str and not isinstance(value, str):
        raise UserError(f"{where}: 'wid.{name}' must be a string, got {value!r}")
    return value


@dataclass
class Geometry:
    """Teacher and student widths, and how many mask updates each group needs."""
    hidden: int
    heads: int
    head_size: int
    ffn: int
    target_hidden: int
    target_ffn: int
    target_heads: int       # student heads
    target_head_size: int   # student head size
    attention_stages: int   # number of stream/attention stages
    schedule_steps: int     # optimizer step of the last mask update

    def student_overrides(self):
        return {"hidden_size": self.target_hidden, "emb_size": self.target_hidden,
                "feedforward_size": self.target_ffn, "heads_num": self.target_heads,
                "attention_head_size": None}


def plan_geometry(model_cfg, wid=None, where="model config"):
    """Check that `model_cfg` (the teacher's shape plus its wid block) can be compressed as asked."""
    wid = wid or model_cfg.wid
    h, heads, d, f = model_cfg.hidden_size, model_cfg.heads_num, model_cfg.head_size, model_cfg.feedforward_size
    if model_cfg.emb_size != h:
        raise UserError(f"{where}: WID needs emb_size == hidden_size (got {model_cfg.emb_size} and {h}): the "
                        f"residual-stream mask covers the embeddings and the MLM head width")
    if heads * d != h:
        raise UserError(f"{where}: WID needs heads_num * attention_head_size == hidden_size "
                        f"(got {heads} x {d} != {h})")
    if model_cfg.encoder != "wid_transformer":
        raise UserError(f"{where}: a wid block needs \"encoder\": \"wid_transformer\" (got '{model_cfg.encoder}')")
    if list(model_cfg.target) != ["wid_mlm"]:
        raise UserError(f"{where}: a wid block needs \"target\": [\"wid_mlm\"] (WID trains with the MLM "
                        f"loss only; got {model_cfg.target})")
    if model_cfg.decoder is not None:
        raise UserError(f"{where}: WID compresses encoder-only models; remove 'decoder'")
    t = wid.target_hidden_size
    if not 1 <= t <= h:
        raise UserError(f"{where}: wid.target_hidden_size {t} must be between 1 and the teacher's hidden "
                        f"size {h}")
    # The strategy (wid/strategies) says which widths it reaches and in how many stream/attention stages.
    strategy = get_strategy(wid.strategy, where=f"{where}: wid.strategy")
    t_heads, t_d = strategy.heads_for(h, heads, d, t, where=where)
    stages = strategy.stages(heads, t_heads, wid)
    tf = wid.target_feedforward_size
    if tf is None:
        if (f * t) % h:
            raise UserError(f"{where}: the FFN target {f} * {t} / {h} is not an integer; set "
                            f"wid.target_feedforward_size (e.g. {round(f * t / h)})")
        tf = f * t // h
    if not 1 <= tf <= f:
        raise UserError(f"{where}: wid.target_feedforward_size {tf} must be between 1 and the teacher's "
                        f"feedforward_size {f}")
    last = max(wid.ffn_stages, stages * wid.attention_stage_interval) * wid.w_step
    return Geometry(h, heads, d, f, t, tf, t_heads, t_d, stages, last)
