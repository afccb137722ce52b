"""The teacher: where its files are, its config checked against the student, its weights loaded frozen.

The teacher is a plain model (no feature block) with the "transformer" encoder, reading the student's
batches, so it must share the student's vocabulary. Only its MLM head is ever used (by the `logits`
term); any other head in its checkpoint (BERT's next-sentence `target.sp`) is dropped with a note, and
a checkpoint without heads (a bare encoder) is fine when no term needs the MLM head.
"""
import os

from tencentpretrain.config import config_for_checkpoint, config_path_beside, load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import drop_unused_heads, load_model_weights, load_state_dict_file

# The teacher's config as distillation uses it: no dropout, the MLM head only.
TEACHER_OVERRIDES = {"dropout": 0.0, "target": ["mlm"]}


def teacher_files(kd):
    """(weights, config) paths of the teacher, checked to exist."""
    if not kd.teacher_model_path:
        raise UserError("the kd block names no teacher: give --teacher_model_path (or kd.teacher_model_path "
                        "in the config)")
    if not os.path.isfile(kd.teacher_model_path):
        raise UserError(f"teacher weights not found: {kd.teacher_model_path} (--teacher_model_path / "
                        f"kd.teacher_model_path)")
    config = kd.teacher_config_path or config_path_beside(kd.teacher_model_path)
    if not os.path.isfile(config):
        how = "" if kd.teacher_config_path else " (none given, and none beside the weights)"
        raise UserError(f"teacher config not found: {config}{how}; give --teacher_config_path or "
                        f"kd.teacher_config_path")
    return kd.teacher_model_path, config


def check_pair(student, teacher, config_path):
    """Refuse a student or teacher the distillation cannot read from."""
    if student.features.keys() - {"kd"}:
        raise UserError(f"the student config has a {sorted(student.features.keys() - {'kd'})} block beside "
                        f"'kd'; distil into a plain student (KD and WID are alternatives)")
    if teacher.features:
        raise UserError(f"{config_path}: the teacher config has a {sorted(teacher.features)} block; distil from "
                        f"a plain teacher (a WID model: merge it first with scripts/merge_compactors.py)")
    for who, cfg in (("student", student), ("teacher", teacher)):
        if cfg.encoder != "transformer" or cfg.decoder is not None:
            raise UserError(f"the {who} has encoder '{cfg.encoder}'"
                            f"{' and a decoder' if cfg.decoder else ''}; KD reads BERT-style encoders "
                            f"('transformer', no decoder)")


def teacher_config(kd, student, state_dict=None):
    """The teacher's ModelConfig (its table sizes from `state_dict` when given), checked against the
    student's."""
    _, path = teacher_files(kd)
    if state_dict is None:
        cfg = load_model_config(path, TEACHER_OVERRIDES)
    else:
        cfg = config_for_checkpoint(path, state_dict, TEACHER_OVERRIDES)
    check_pair(student, cfg, path)
    if state_dict is not None and student.vocab_size is not None and cfg.vocab_size != student.vocab_size:
        raise UserError(f"the teacher {kd.teacher_model_path} has a vocabulary of {cfg.vocab_size} tokens, the "
                        f"student {student.vocab_size}; distillation needs the teacher's vocabulary "
                        f"(--vocab_path of the teacher, and a dataset made with it)")
    return cfg


def load_teacher(kd, student, need_mlm_head):
    """The teacher model with its weights, in eval mode, with no parameter requiring a gradient."""
    path, config_path = teacher_files(kd)
    sd = load_state_dict_file(path)
    cfg = teacher_config(kd, student, sd)
    model = build_model(cfg)
    if any(k.startswith("target.mlm.") for k in sd):
        load_model_weights(model, drop_unused_heads(model, sd, where=path), where=path)
    elif need_mlm_head:
        raise UserError(f"{path} has no MLM head (target.mlm.*), which kd.logits distils from; give a teacher "
                        f"trained with the mlm target, or set kd.logits to 0")
    else:
        encoder = {k: v for k, v in sd.items() if not k.startswith("target.")}
        load_model_weights(model, encoder, allow_missing=("target.",), where=path)
    model.eval()
    model.requires_grad_(False)
    return model, cfg
