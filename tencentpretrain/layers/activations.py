import math

import torch
import torch.nn.functional as F


def gelu_fast(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


ACTIVATIONS = {"gelu": F.gelu, "gelu_fast": gelu_fast, "relu": F.relu, "silu": F.silu}
