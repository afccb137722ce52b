"""Look inside a transformer encoder while it runs: per-layer hidden states, each layer's attention
queries, keys and values (so its scores and probabilities), and the output of any named submodule.

Everything is recorded by forward hooks on the model's own modules, so the modules are unchanged and a
model without a Capture runs exactly as before. The records are the tensors the forward computes
anyway (references, nothing is recomputed); they keep their autograd graph, so losses on them train
the model. Each forward overwrites the previous records.

    with Capture(model, hidden=[0, 2], attention=[2], outputs=["target.mlm.linear_2"]) as cap:
        model(batch)
    cap.hidden[0]               # the input of layer 1 (the embeddings, in the hidden size), [B, L, H]
    cap.hidden[2]               # the output of layer 2
    cap.attention[2].probs()    # layer 2's attention probabilities, [B, heads, L, L]
    cap.outputs["target.mlm.linear_2"]

Layers are numbered from 1 (layer l = `encoder.transformer[l - 1]`); hidden state 0 is the input of the
first layer, as in Hugging Face's `hidden_states`.
"""
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class AttentionRecord:
    """One self-attention call: per-head projections [B, heads, L, head_size] and the additive mask."""
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: Optional[torch.Tensor]  # [B, 1, Lq, Lk] additive, or None (nothing hidden)
    scale: float

    def scores(self, dtype=None):
        """Scaled dot products q.k / sqrt(head_size), before the mask: [B, heads, Lq, Lk] (in `dtype`, by
        default the recorded one)."""
        q, k = (self.query, self.key) if dtype is None else (self.query.to(dtype), self.key.to(dtype))
        return torch.matmul(q, k.transpose(-1, -2)) * self.scale

    def probs(self, dtype=None):
        """The attention distribution over keys (masked keys get probability 0)."""
        scores = self.scores(dtype)
        if self.mask is not None:
            scores = scores + self.mask.to(scores.dtype)
        return torch.softmax(scores, dim=-1)


def encoder_layers(model):
    """The transformer layers of `model`'s encoder, or a ValueError naming what is missing."""
    layers = getattr(getattr(model, "encoder", None), "transformer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not all(hasattr(l, "self_attn") for l in layers):
        raise ValueError(f"{type(model).__name__}: no encoder.transformer layers with self_attn to capture")
    return layers


class Capture:
    """Hooks recording what `model` computes; `close()` (or leaving the `with` block) removes them."""

    def __init__(self, model, hidden=(), attention=(), outputs=()):
        layers = encoder_layers(model)
        self.hidden, self.attention, self.outputs = {}, {}, {}
        self._handles, self._qkv = [], {}
        for index in sorted(set(hidden)):
            if not 0 <= index <= len(layers):
                raise ValueError(f"hidden state {index}: the encoder has states 0..{len(layers)}")
            if index == 0:
                self._hook(layers[0].register_forward_pre_hook(self._record_input))
            else:
                self._hook(layers[index - 1].register_forward_hook(self._record_hidden(index)))
        for index in sorted(set(attention)):
            if not 1 <= index <= len(layers):
                raise ValueError(f"attention of layer {index}: the encoder has layers 1..{len(layers)}")
            self._watch_attention(index, layers[index - 1].self_attn)
        modules = dict(model.named_modules())
        for name in outputs:
            if name not in modules:
                raise ValueError(f"no submodule '{name}' to capture")
            self._hook(modules[name].register_forward_hook(self._record_output(name)))

    def _hook(self, handle):
        self._handles.append(handle)

    def _record_input(self, _module, args):
        self.hidden[0] = args[0]

    def _record_hidden(self, index):
        def hook(_module, _args, output):
            self.hidden[index] = output
        return hook

    def _record_output(self, name):
        def hook(_module, _args, output):
            self.outputs[name] = output
        return hook

    def _watch_attention(self, index, attn):
        """q, k, v from the outputs of the attention's three input projections; the mask from its call."""
        parts = self._qkv[index] = {}

        def on_call(_module, args, kwargs):
            parts.clear()
            parts["mask"] = kwargs["mask"] if "mask" in kwargs else args[3]

        def on_projection(which):
            def hook(_module, _args, output):
                batch, length, _ = output.shape
                parts[which] = output.view(batch, length, -1, attn.head_size).transpose(1, 2)
                if len(parts) == 4:
                    self.attention[index] = AttentionRecord(parts["query"], parts["key"], parts["value"],
                                                            parts["mask"], attn.scale)
            return hook

        self._hook(attn.register_forward_pre_hook(on_call, with_kwargs=True))
        for which, linear in zip(("query", "key", "value"), attn.linear_layers):
            self._hook(linear.register_forward_hook(on_projection(which)))

    def clear(self):
        """Drop the records (and with them the graph they hold) until the next forward."""
        self.hidden.clear()
        self.attention.clear()
        self.outputs.clear()

    def close(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
