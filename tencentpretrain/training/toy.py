"""A tiny model and loader that follow the model and loader contracts, for tests and for trying
callbacks without building a BERT. Rows are generated from (seed, global row index), so any split of
the same rows into micro-batches or ranks sees the same data."""
import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.targets.target import ModelOutput


class ToyModel(nn.Module):
    def __init__(self, vocab_size=32, hidden_size=16, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.linear = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, batch):
        hidden = self.dropout(torch.tanh(self.linear(self.embedding(batch["src"]))))
        logits = self.output(self.layer_norm(hidden)).float()
        gold = batch["tgt_mlm"].reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), gold)
        n = gold.numel()
        correct = (logits.detach().argmax(-1).reshape(-1) == gold).sum()
        return ModelOutput(loss, {"mlm_loss": (loss.detach() * n, n), "mlm_acc": (correct, n)})


class ToyLoader:
    """Endless batches; batch i on rank r holds global rows (i*world_size + r)*batch_size + [0, batch_size)."""

    def __init__(self, batch_size=4, seq_length=8, vocab_size=32, rank=0, world_size=1, seed=0):
        self.batch_size, self.seq_length, self.vocab_size = batch_size, seq_length, vocab_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.position = 0

    def _row(self, j):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + j)
        src = torch.randint(0, self.vocab_size, (self.seq_length,), generator=g)
        return src, (src * 3 + 1) % self.vocab_size

    def __iter__(self):
        while True:
            first = (self.position * self.world_size + self.rank) * self.batch_size
            self.position += 1  # before yielding, so state_dict() counts batches handed out
            rows = [self._row(first + k) for k in range(self.batch_size)]
            src = torch.stack([r[0] for r in rows])
            yield {"src": src, "seg": torch.ones_like(src), "tgt_mlm": torch.stack([r[1] for r in rows])}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]
