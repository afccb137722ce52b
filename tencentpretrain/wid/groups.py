"""Mask groups: the sets of coordinates that must be pruned together (docs/wid.md, "What is masked together").

    S    the residual stream (hidden): the embedding compactor, every compactor reading or writing the
         stream, every LayerNorm on it. One mask for the whole network.
    A.l  layer l's attention inner width: Q/K/V outputs and the attention-output input.
    F.l  layer l's FFN inner width.
    M    the MLM head width (its own indices, not tied to S; same count, see plan_geometry).

A group is an nn.Module owned by one module of the model (so its mask is part of the state dict:
`embedding.wid_mask.keep`, `encoder.transformer.3.self_attn.wid_mask.keep`, ...). `attach` builds
them from the model's structure and tells every member which group indexes which of its axes.
WID training masks them step by step (schedule.py); magnitude pruning (pruning.py) sets them once.
"""
import torch
import torch.nn as nn

from tencentpretrain.wid.compactor import CompactedLinear
from tencentpretrain.wid.layer_norm import MaskedLayerNorm
from tencentpretrain.wid.strategies import get_strategy


class MaskGroup(nn.Module):
    def __init__(self, name, kind, size, target, unit=1, strategy=None, by_head=None):
        super().__init__()
        self.name, self.kind, self.size, self.target = name, kind, size, target
        self.unit = unit  # dims per head for attention groups, else 1
        # Cut in head-sized chunks, as `strategy` (a MaskStrategy, wid/strategies) says: attention
        # groups, and the stream S under `importance: reference`, as the reference code cuts it.
        self.by_head = kind == "attention" if by_head is None else by_head
        self.strategy = strategy
        # keep: not masked. decay: 1 while kept, the product of the per-step pulls once masked,
        # exactly 0 once the dim was zeroed ("dead": skipped by the fold, zeroed after each step).
        self.register_buffer("keep", torch.ones(size, dtype=torch.bool))
        self.register_buffer("decay", torch.ones(size, dtype=torch.float32))
        self.register_buffer("keep_float", torch.ones(size), persistent=False)
        self.register_buffer("alive_index", torch.arange(size), persistent=False)
        # Members: (module, parameter name, axis) whose slices along `axis` are this group's dims.
        self.members = []
        self.reference = None  # the compactor the reference code ranks this group by
        self.n_kept, self.all_kept, self.all_alive = size, True, True
        self._dirty = False
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_dirty", True))

    def extra_repr(self):
        return f"{self.name}: {self.kind}, size {self.size} -> {self.target}"

    def refresh(self):
        """Recompute the cached views of the mask (after an update or a load; never per forward)."""
        self.keep_float.copy_(self.keep.float())
        alive = self.decay > 0
        self.alive_index = alive.nonzero().flatten()
        self.n_kept = int(self.keep.sum())
        self.all_kept, self.all_alive = self.n_kept == self.size, bool(alive.all())
        self._dirty = False

    def ensure_fresh(self):
        if self._dirty:
            self.refresh()

    # What the forward needs: None means "every coordinate", so an unmasked model runs the teacher's code.
    def active(self):
        self.ensure_fresh()
        return None if self.all_alive else self.alive_index

    def kept_weights(self):
        self.ensure_fresh()
        return None if self.all_kept else (self.keep_float, self.n_kept)

    def kept_index(self):
        return self.keep.nonzero().flatten()

    def params(self):
        """(parameter, axis, is_compactor) of every member."""
        for module, name, axis in self.members:
            p = getattr(module, name)
            if p is not None:
                yield p, axis, name.startswith("compactor")

    def weights(self):
        """(module, "weight", axis) of every teacher matrix whose slices along `axis` are this group's
        coordinates: the weights the compactors sit on (an embedding compactor: the word, position and
        segment tables, whose columns are the stream)."""
        for module, name, axis in self.members:
            if isinstance(module, CompactedLinear) and name.startswith("compactor"):
                yield module, "weight", axis
            elif name == "compactor_out":  # the embedding
                for table in module.names:
                    yield getattr(module, table).embedding, "weight", 1


def _own(owner, group):
    owner.wid_mask = group  # registered as a submodule: its buffers join the state dict
    return group


def _link_linear(linear, in_group=None, out_group=None):
    if not isinstance(linear, CompactedLinear):
        raise TypeError(f"expected a CompactedLinear, got {type(linear).__name__}")
    linear.groups = (in_group, out_group)
    if in_group is not None and linear.compactor_in is not None:
        in_group.members.append((linear, "compactor_in", 1))   # columns of L
    if out_group is not None and linear.compactor_out is not None:
        out_group.members.append((linear, "compactor_out", 0))  # rows of R


def _link_norm(norm, group):
    if norm is None:
        return
    if not isinstance(norm, MaskedLayerNorm):
        raise TypeError(f"expected a MaskedLayerNorm, got {type(norm).__name__}")
    norm.group = (group,)
    group.members += [(norm, "gamma", 0), (norm, "beta", 0)]


def attach(model, geometry, strategy, stream_by_head=False):
    """Create the groups of a WID model (embedding, wid_transformer encoder, wid_mlm target).
    `strategy`: a mask strategy or its name; `stream_by_head`: cut S in head-sized chunks like the
    attention width (the reference's way)."""
    g = geometry
    if isinstance(strategy, str):
        strategy = get_strategy(strategy)
    emb, enc, mlm = model.embedding, model.encoder, model.target.mlm
    if stream_by_head:
        s = MaskGroup("S", "stream", g.hidden, g.target_hidden, unit=g.head_size, strategy=strategy, by_head=True)
    else:
        s = MaskGroup("S", "stream", g.hidden, g.target_hidden)
    s = _own(emb, s)
    emb.groups = (s,)
    s.members.append((emb, "compactor_out", 0))
    _link_norm(emb.layer_norm, s)
    for i, layer in enumerate(enc.transformer):
        attn, ffn = layer.self_attn, layer.feed_forward
        a = _own(attn, MaskGroup(f"A.{i}", "attention", g.hidden, g.target_hidden, unit=g.head_size,
                                 strategy=strategy))
        f = _own(ffn, MaskGroup(f"F.{i}", "ffn", g.ffn, g.target_ffn))
        for lin in attn.linear_layers:
            _link_linear(lin, s, a)
        _link_linear(attn.final_linear, a, s)
        _link_linear(ffn.linear_1, s, f)
        _link_linear(ffn.linear_2, f, s)
        _link_norm(layer.layer_norm_1, s)
        _link_norm(layer.layer_norm_2, s)
        a.reference = (attn.final_linear, "compactor_in", 1)
        f.reference = (ffn.linear_2, "compactor_in", 1)
        if i == 0:
            s.reference = (attn.linear_layers[2], "compactor_in", 1)  # layer 0's V input
    _link_norm(enc.layer_norm, s)  # pre-LN models only
    m = _own(mlm, MaskGroup("M", "mlm", g.hidden, g.target_hidden))
    _link_linear(mlm.linear_1, s, m)
    _link_norm(mlm.layer_norm, m)
    _link_linear(mlm.linear_2, m, None)  # the vocabulary is never pruned
    m.reference = (mlm.linear_2, "compactor_in", 1)
    return groups_of(model)


def groups_of(model):
    """The model's mask groups in a fixed order: S, A.0, F.0, A.1, F.1, ..., M."""
    return [m for m in model.modules() if isinstance(m, MaskGroup)]
