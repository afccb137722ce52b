"""What the pre-training loop (training/) and the fine-tuning loop (tasks/) share at run time:
seeding, mixed-precision autocast, and how a duration is printed."""
import datetime
import random

import numpy as np
import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed):
    """Seed Python's, NumPy's and torch's global generators (NumPy takes the seed modulo 2**32)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def autocast(device, precision="fp32"):
    """torch.autocast on `device`'s type for `precision`: "bf16" or "fp16", or "fp32" (off)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def format_duration(seconds, compact=False):
    """`seconds` as H:MM:SS (pre-training's progress lines), or compact: 3m07s, and 2h05m from an hour
    on (fine-tuning's ETA). Negative durations print as zero."""
    seconds = int(max(0, seconds))
    if not compact:
        return str(datetime.timedelta(seconds=seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
