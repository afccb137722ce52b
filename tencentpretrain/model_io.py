"""Reading and writing model weights: plain state dicts, never unpickled code.

`.safetensors` files need the optional `safetensors` package; anything else is read with
`torch.load(weights_only=True)` and written with `torch.save`.
"""
import os
from dataclasses import dataclass, field

import torch

from tencentpretrain.errors import UserError
from tencentpretrain.utils.io import atomic_write
from tencentpretrain.utils.log import info


def load_state_dict_file(path):
    if not os.path.isfile(path):
        raise UserError(f"model file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path}: reading .safetensors needs the optional package "
                            f"'safetensors' (pip install safetensors)") from None
        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:  # a damaged or truncated header, an unreadable file
            raise UserError(f"{path}: not a readable .safetensors file ({err}); the file is damaged or "
                            "incomplete: copy or convert it again") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, or pickled objects other than tensors
        raise UserError(f"{path}: cannot read as a weights-only checkpoint ({err})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: not a state dict of tensors (keys to weights)")
    return sd


def save_state_dict(sd, path):
    """Write `sd` atomically: a crash mid-write leaves any previous file at `path` intact."""
    # Tied weights share storage; both formats want each tensor standalone.
    sd = {k: v.detach().cpu().clone().contiguous() for k, v in sd.items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save
        with atomic_write(path, "wb") as f:
            f.write(save(sd))
    else:
        with atomic_write(path, "wb") as f:
            torch.save(sd, f)


@dataclass
class LoadReport:
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)  # (key, checkpoint shape, model shape)


def _listing(keys, limit=8):
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_model_weights(model, source, allow_missing=(), allow_unexpected=(), where=None):
    """Load a state dict (or a file) into `model` and report what did not match.

    Keys starting with a prefix in `allow_missing` may be absent from the checkpoint (a new head),
    and keys starting with one in `allow_unexpected` may be left over (a pre-training head when
    fine-tuning). Anything else missing or left over, and every shape mismatch, is a UserError.
    """
    where = where or (source if isinstance(source, str) else "checkpoint")
    sd = load_state_dict_file(source) if isinstance(source, str) else source
    own = model.state_dict()
    report = LoadReport()
    for key, value in sd.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
    report.missing = [k for k in own if k not in sd]
    bad_missing = [k for k in report.missing if not k.startswith(tuple(allow_missing))]
    bad_unexpected = [k for k in report.unexpected if not k.startswith(tuple(allow_unexpected))]
    problems = []
    if report.mismatched:
        problems.append("shape mismatches: " + _listing(
            [f"{k} {tuple(a)} in checkpoint vs {tuple(b)} in model" for k, a, b in report.mismatched]))
    if bad_missing:
        problems.append(f"{len(bad_missing)} model keys missing from the checkpoint: {_listing(bad_missing)}")
    if bad_unexpected:
        problems.append(f"{len(bad_unexpected)} checkpoint keys the model does not have: "
                        f"{_listing(bad_unexpected)}")
    if problems:
        raise UserError(f"{where} does not fit the model config: " + "; ".join(problems) +
                        ". Check --config_path matches the checkpoint (or convert it with "
                        "scripts/convert_*.py).")
    usable = {k: v for k, v in sd.items() if k in own}
    model.load_state_dict(usable, strict=False)
    return report


def head_of(key):
    """`target.<name>` for a key of a pre-training head (`target.<name>.<...>`), else None."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "target" and len(parts) > 2 else None


def drop_unused_heads(model, sd, where="checkpoint", log=info):
    """`sd` without the keys of pre-training heads the model does not have (e.g. a BERT checkpoint's
    next-sentence head `target.sp` when training with --target mlm), with a note naming them.

    Only whole heads are dropped: a head the model does have keeps all its keys, so any of them
    missing or extra is still an error in `load_model_weights`, as is any key outside `target.`.
    """
    own = {head_of(k) for k in model.state_dict()}
    counts = {}
    for key in sd:
        head = head_of(key)
        if head is not None and head not in own:
            counts[head] = counts.get(head, 0) + 1
    if not counts:
        return sd
    heads = ", ".join(f"{head} ({n} tensors)" for head, n in sorted(counts.items()))
    log(f"note: {where}: dropped {sum(counts.values())} keys of heads this model does not use: {heads}",
        flush=True)
    return {k: v for k, v in sd.items() if head_of(k) not in counts}
