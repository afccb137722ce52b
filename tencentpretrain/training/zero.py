"""Optimizer-state sharding across data-parallel ranks (ZeRO stage 1), `--zero_optimizer`.

Each of the N ranks owns about 1/N of the trainable parameters (`assign`), keeps Adam's two moments
for its share only and steps only its share; then each owner broadcasts its updated parameters, so
every rank ends the step with the same weights. Gradients are still all-reduced in full by DDP (stage 1
shards the optimizer state, not gradients or weights), so clipping sees the same global norm and the
update equals an unsharded run's bit for bit: AdamW is element-wise, each parameter goes through the
same kernel with the same gradient, and a broadcast copies values exactly.

How: the run keeps its own optimizer (the same class, groups, learning-rate schedule and checkpoint
format). Before its step the gradients of parameters another rank owns are dropped; torch's optimizers
skip a parameter without a gradient and allocate no state for it. A checkpoint gathers every rank's
state on rank 0 into the dict an unsharded run saves; a resume loads that dict and drops the state of
other ranks' parameters, so checkpoints move freely between sharded and unsharded runs.

Why not `torch.distributed.optim.ZeroRedundancyOptimizer`: it builds its own copy of the optimizer
from a class and keyword arguments and partitions inside, so the benchmark could not count a rank's
share from the same assignment, and its consolidated dict is a reconstruction rather than the
optimizer's own. TencentPretrain's analogue is `--deepspeed` with a ZeRO stage in its DeepSpeed config.
Guide: docs/performance.md ("Optimizer-state sharding").
"""
import torch
import torch.distributed as dist

BUCKET_ELEMENTS = 1 << 24  # broadcast at most 16M values at a time (64 MiB in fp32): a bounded extra buffer


def assign(sizes, world_size):
    """Owner rank of each parameter, given their element counts in optimizer order: largest first to the
    least-loaded rank (ties: the lower rank). Deterministic, so every rank computes the same owners."""
    load, owners = [0] * world_size, [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        rank = min(range(world_size), key=lambda r: load[r])
        owners[i] = rank
        load[rank] += sizes[i]
    return owners


def optimizer_params(param_groups):
    """The optimizer's parameters in the order its state dict numbers them."""
    return [p for group in param_groups for p in group["params"]]


def state_bytes_per_rank(parameters, param_groups, world_size=1):
    """Bytes each rank holds in parameters + gradients + Adam's two moments (activations not counted):
    every rank keeps all weights and the gradients of trainable ones; the moments live with the owner.
    `parameters`: all of the model's; `param_groups`: the optimizer's (its parameters are the trainable ones)."""
    trained = optimizer_params(param_groups)
    owners = dict(zip(map(id, trained), assign([p.numel() for p in trained], world_size)))
    per_rank = [0] * world_size
    for p in parameters:
        size = p.numel() * p.element_size()
        for rank in range(world_size):
            per_rank[rank] += size * (1 + (id(p) in owners) + 2 * (owners.get(id(p)) == rank))
    return per_rank


def held_state_bytes(optimizer):
    """Bytes of the tensors in this rank's optimizer state (moments and step counters)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v))


class StateSharder:
    """Shards `optimizer`'s state over the ranks of `env` (see the module docstring). The trainer calls
    `step` in place of the optimizer's step, `state_dict` on every rank when saving and `load_state_dict`
    when resuming."""

    def __init__(self, optimizer, env):
        self.optimizer, self.env = optimizer, env
        params = optimizer_params(optimizer.param_groups)
        owners = assign([p.numel() for p in params], env.world_size)
        self.owned = [[p for p, o in zip(params, owners) if o == rank] for rank in range(env.world_size)]
        self.mine = self.owned[env.rank]
        self._foreign = [p for p, o in zip(params, owners) if o != env.rank]

    def step(self, step_fn):
        """Drop other ranks' gradients, run `step_fn` (the optimizer's or the loss scaler's step), then
        share the updated parameters."""
        for p in self._foreign:
            p.grad = None
        step_fn()
        self.broadcast_parameters()

    @torch.no_grad()
    def broadcast_parameters(self):
        """Every owner sends its parameters to all ranks, in flat buckets of at most BUCKET_ELEMENTS."""
        for rank, params in enumerate(self.owned):
            for bucket in _buckets(params):
                flat = torch.cat([p.reshape(-1) for p in bucket]) if rank == self.env.rank else \
                    torch.empty(sum(p.numel() for p in bucket), dtype=bucket[0].dtype, device=bucket[0].device)
                dist.broadcast(flat, src=rank)
                if rank != self.env.rank:
                    for p, value in zip(bucket, flat.split([p.numel() for p in bucket])):
                        p.copy_(value.view_as(p))

    def state_dict(self):
        """The optimizer's full state dict on rank 0 (as an unsharded run's), None on other ranks.
        A collective: every rank calls it."""
        mine = {i: {k: v.cpu() if torch.is_tensor(v) else v for k, v in s.items()}
                for i, s in self.optimizer.state_dict()["state"].items()}
        gathered = [None] * self.env.world_size if self.env.is_main else None
        dist.gather_object(mine, gathered, dst=0)
        if not self.env.is_main:
            return None
        full = self.optimizer.state_dict()
        merged = {i: s for part in gathered for i, s in part.items()}
        full["state"] = {i: merged[i] for i in sorted(merged)}
        return full

    def load_state_dict(self, state_dict):
        """Load a full state dict (sharded or not when saved) and keep only this rank's share."""
        self.optimizer.load_state_dict(state_dict)
        for p in self._foreign:
            self.optimizer.state.pop(p, None)


def _buckets(params):
    """Consecutive runs of `params` of one dtype and device, each at most BUCKET_ELEMENTS long (a larger
    parameter is a bucket of its own)."""
    bucket, size = [], 0
    for p in params:
        kind_changes = bucket and (p.dtype, p.device) != (bucket[0].dtype, bucket[0].device)
        if bucket and (size + p.numel() > BUCKET_ELEMENTS or kind_changes):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.numel()
    if bucket:
        yield bucket
