"""Parameter groups, AdamW and learning-rate schedules."""
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from tencentpretrain.errors import UserError

SCHEDULERS = ("linear", "cosine", "constant_with_warmup")


@dataclass
class ParamGroupClaim:
    """Parameters selected by `predicate(name, param)` get their own lr and weight decay and leave
    the default groups. The first matching claim wins. Biases and LayerNorm parameters inside a claim
    still get no weight decay unless `decay_norm_and_bias` is set."""
    name: str
    predicate: Callable[[str, nn.Parameter], bool]
    lr: Optional[float] = None            # None: the run's --learning_rate
    weight_decay: Optional[float] = None  # None: the run's --weight_decay
    decay_norm_and_bias: bool = False


def no_decay_names(model):
    """Biases and LayerNorm gamma/beta (TencentPretrain's names and nn.LayerNorm's weight/bias)."""
    names = set()
    for mod_name, module in model.named_modules():
        is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "LayerNorm" in type(module).__name__
        for p_name, _ in module.named_parameters(recurse=False):
            if is_norm or p_name in ("bias", "gamma", "beta"):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def build_param_groups(model, lr, weight_decay, claims=()):
    """Default groups (decay / no decay) plus two groups per claim. Frozen parameters are left out.
    Each group carries a `name` so logs and tests can find it."""
    skip_decay = no_decay_names(model)
    buckets = {}  # group name -> group dict, in insertion order
    for p_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        claim = next((c for c in claims if c.predicate(p_name, param)), None)
        base, g_lr, g_wd = "default", lr, weight_decay
        if claim is not None:
            base = claim.name
            g_lr = lr if claim.lr is None else claim.lr
            g_wd = weight_decay if claim.weight_decay is None else claim.weight_decay
        decays = p_name not in skip_decay or (claim is not None and claim.decay_norm_and_bias)
        key = base if decays else f"{base}_no_decay"
        group = buckets.setdefault(key, {"name": key, "params": [], "param_names": [], "lr": g_lr,
                                         "weight_decay": g_wd if decays else 0.0})
        group["params"].append(param)
        group["param_names"].append(p_name)
    return list(buckets.values())


class AdamWNoBiasCorrection(torch.optim.Optimizer):
    """AdamW without bias correction, as TencentPretrain's BertAdam / AdamW(correct_bias=False):
    step t is larger than torch's AdamW by about sqrt(1-beta2^t)/(1-beta1^t) inverted, i.e. ~3.2x at
    t=1 with the default betas, fading as the moments warm up. Weight decay is decoupled and applied
    before the update, as in torch.optim.AdamW."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            exp_avg = [s["exp_avg"] for s in states]
            exp_avg_sq = [s["exp_avg_sq"] for s in states]
            # One multi-tensor op per line instead of one op per parameter (the same arithmetic, so the
            # same numbers as the per-parameter loop; much less Python overhead on many small tensors).
            torch._foreach_add_([s["step"] for s in states], 1)
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            torch._foreach_mul_(exp_avg, beta1)
            torch._foreach_add_(exp_avg, grads, alpha=1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, exp_avg, denom, value=-group["lr"])
        return loss


def fused_supported(param_groups):
    """True when torch's single-kernel AdamW can take these parameters: floating point, all on CPU
    or all on one CUDA device type (torch >= 2.4 has a fused CPU kernel)."""
    params = [p for g in param_groups for p in (g["params"] if isinstance(g, dict) else [g])]
    kinds = {p.device.type for p in params}
    return bool(params) and len(kinds) == 1 and kinds <= {"cpu", "cuda"} and \
        all(p.is_floating_point() for p in params)


def check_rates(lr, weight_decay, where=""):
    """A learning rate and a weight decay must be finite and >= 0 (torch's own check is a bare
    `ValueError: Invalid learning rate`, and a NaN passes it)."""
    if not 0.0 <= lr < float("inf"):
        raise UserError(f"--learning_rate {lr}{where}: must be a finite number >= 0 (e.g. 1e-4)")
    if weight_decay is not None and not 0.0 <= weight_decay < float("inf"):
        raise UserError(f"--weight_decay {weight_decay}{where}: must be a finite number >= 0 (e.g. 0.01)")


def build_optimizer(param_groups, name="adamw", lr=1e-4, betas=(0.9, 0.999), eps=1e-6, bias_correction=True):
    if name != "adamw":
        raise UserError(f"--optimizer {name!r} is not supported; use adamw")
    check_rates(lr, None)
    param_groups = list(param_groups)
    for group in param_groups:  # claims bring their own values (WID's compactor learning rate)
        if isinstance(group, dict):
            check_rates(group.get("lr", lr), group.get("weight_decay"), f" (parameter group {group.get('name')})")
    # Groups keep their own lr/weight_decay; the values here are only defaults.
    if bias_correction:
        # fused: one pass over each tensor for the whole update instead of ~8 element-wise passes
        # (5x faster on CPU, where torch's default is the per-parameter loop); the result differs from
        # the loop by rounding only (~1e-7), and a resumed run keeps the setting its checkpoint saved.
        param_groups = list(param_groups)
        fused = fused_supported(param_groups) or None
        return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps, fused=fused)
    return AdamWNoBiasCorrection(param_groups, lr=lr, betas=betas, eps=eps)


def lr_factor(name, total_steps, warmup_steps):
    """Multiplier of the base lr as a function of s = optimizer steps already taken (0..total-1).
    Warmup is (s+1)/W so the first step already trains (Hugging Face's s/W wastes it)."""
    if name not in SCHEDULERS:
        raise UserError(f"--scheduler {name!r} is not supported; choose one of: {', '.join(SCHEDULERS)}")
    warm = max(0, warmup_steps)
    decay_steps = max(1, total_steps - warm)

    def factor(s):
        if s < warm:
            return (s + 1) / warm
        if name == "constant_with_warmup":
            return 1.0
        progress = min(1.0, (s - warm) / decay_steps)
        if name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return factor


def build_scheduler(optimizer, name, total_steps, warmup):
    """`warmup` is a fraction of total_steps, as TencentPretrain's --warmup."""
    if not 0.0 <= warmup <= 1.0:
        raise UserError(f"--warmup {warmup} must be a fraction of --total_steps between 0 and 1")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(name, total_steps, int(total_steps * warmup)))
