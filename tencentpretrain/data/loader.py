"""Batches from a dataset file, forever, sharded over ranks, resumable to the exact batch.

The order. Instances form one endless stream: the permutation of epoch 0, then that of epoch 1, ...
(epoch e's permutation comes from numpy's Generator seeded with (seed, e); identity if not shuffle).
With G = batch_size * world_size, step s of rank r holds stream positions

    [s*G + r*batch_size, s*G + (r+1)*batch_size)

so at every step the ranks 0..W-1 together hold stream[s*G:(s+1)*G], in rank order: exactly the batch
a single process with batch_size B*W yields at step s (the trainer's DDP-equivalence rests on this).
No instance is dropped at an epoch's end; a batch may straddle two epochs.

Dynamic masking draws from a Generator seeded with (seed, epoch, instance index), so an instance gets
the same mask on every rank and after a resume, and a new mask each epoch.

What a batch holds follows the processor's declaration (processors/base.py), read from the dataset:
token_target "mlm" gives tgt_mlm (static masks from the file, or dynamic ones), "lm" gives tgt_lm (the
window shifted by one); each of its `labels` gives tgt_<target>; a "seg_split" array gives segment 2.

Padding: to the longest instance of the batch (`pad_to_seq_length=True`: to the dataset's seq_length,
so that rank batches concatenate into the single-process batch tensor for tensor).
"""
import numpy as np
import torch

from tencentpretrain.constants import IGNORE_INDEX
from tencentpretrain.data.dataset import Dataset, check_compatible
from tencentpretrain.data.masking import MaskSpec, mask_instance
from tencentpretrain.errors import UserError


def build_loader(dataset_path, batch_size, rank=0, world_size=1, seed=7, shuffle=True,
                 pad_to_seq_length=False, vocab_size=None, seq_length=None, processor=None):
    """A `DataLoader` over a preprocess.py dataset. `vocab_size`, `seq_length`, `processor`, when
    given, are checked against the dataset header (UserError on mismatch)."""
    loader = DataLoader(dataset_path, batch_size, rank, world_size, seed, shuffle, pad_to_seq_length)
    check_compatible(loader.header, vocab_size, seq_length, processor, path=dataset_path)
    return loader


class DataLoader:
    """Iterate for batch dicts (src, seg, tgt_mlm | tgt_sp | tgt_lm as LongTensors)."""

    def __init__(self, dataset_path, batch_size, rank=0, world_size=1, seed=7, shuffle=True,
                 pad_to_seq_length=False):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"bad data sharding: batch_size {batch_size}, rank {rank}, world_size {world_size}")
        self.dataset = Dataset(dataset_path)
        self.header = h = self.dataset.header
        if len(self.dataset) == 0:
            raise UserError(f"{dataset_path} holds no instance; re-run preprocess.py on a non-empty corpus")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle, self.pad_to_seq_length = seed, shuffle, pad_to_seq_length
        self.position = 0  # stream position of the next global batch
        self._perms = {}
        ids = h.special_ids
        self.pad_id = ids["pad"]
        self.token_target, self.labels = self.dataset.processor.token_target, self.dataset.processor.labels
        self.mask_spec = None
        if h.dynamic_masking and self.token_target == "mlm":
            cont = self.dataset.arrays.get("is_continuation")
            self.mask_spec = MaskSpec.build(h.vocab_size, [ids["pad"], ids["cls"], ids["sep"], ids["mask"]],
                                            ids["mask"], None if cont is None else np.asarray(cont, dtype=bool))

    @property
    def instances_num(self):
        return len(self.dataset)

    def __iter__(self):
        while True:
            start = self.position + self.rank * self.batch_size
            self.position += self.batch_size * self.world_size  # before yielding: state_dict() = next batch
            yield self.collate(range(start, start + self.batch_size))

    def state_dict(self):
        n = self.instances_num
        return {"epoch": self.position // n, "position": self.position % n, "instances_num": n,
                "seed": self.seed, "shuffle": self.shuffle}

    def load_state_dict(self, state):
        n = self.instances_num
        if state.get("instances_num", n) != n or state.get("seed", self.seed) != self.seed:
            raise UserError(f"the data position was saved for a dataset of {state.get('instances_num')} instances "
                            f"with seed {state.get('seed')}, but {self.dataset.path} has {n} and seed is "
                            f"{self.seed}; resume with the same dataset and --seed")
        self.position = int(state["epoch"]) * n + int(state["position"])

    def stream_indices(self, positions):
        """(epoch, instance index) of each stream position."""
        n = self.instances_num
        out = []
        for p in positions:
            epoch, i = divmod(p, n)
            out.append((epoch, int(self._perm(epoch)[i])))
        return out

    def _perm(self, epoch):
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            n = self.instances_num
            self._perms[epoch] = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                                  else np.arange(n))
        return self._perms[epoch]

    def collate(self, positions):
        """The batch of the given stream positions."""
        h, ds = self.header, self.dataset
        picks = self.stream_indices(positions)
        items = [ds[i] for _, i in picks]
        lm = self.token_target == "lm"  # instances of n + 1 tokens: input [:-1], target [1:]
        lengths = [len(it["tokens"]) - lm for it in items]
        L = h.seq_length if self.pad_to_seq_length else max(lengths)
        B = len(items)
        src = np.full((B, L), self.pad_id, dtype=np.int64)
        seg = np.zeros((B, L), dtype=np.int64)
        tgt = np.full((B, L), IGNORE_INDEX, dtype=np.int64)
        for j, ((epoch, index), it, n) in enumerate(zip(picks, items, lengths)):
            tokens = it["tokens"]
            seg[j, :n] = 1
            if lm:
                src[j, :n], tgt[j, :n] = tokens[:-1], tokens[1:]
                continue
            if self.mask_spec is not None:
                rng = np.random.default_rng([self.seed, epoch, index])
                tokens, positions_j, targets = mask_instance(tokens, rng, self.mask_spec)
            else:
                positions_j, targets = it["mlm_positions"], it["mlm_targets"]
            src[j, :n] = tokens
            tgt[j, positions_j] = targets
            if "seg_split" in it:
                seg[j, it["seg_split"]:n] = 2
        batch = {"src": torch.from_numpy(src), "seg": torch.from_numpy(seg)}
        batch[f"tgt_{self.token_target}"] = torch.from_numpy(tgt)
        for target, array in self.labels.items():
            batch[f"tgt_{target}"] = torch.tensor([it[array] for it in items], dtype=torch.long)
        return batch
