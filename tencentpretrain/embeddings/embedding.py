"""Word, position and segment embeddings, summed, then LayerNorm and dropout.

Keys: embedding.word.embedding.weight, embedding.pos.embedding.weight,
embedding.seg.embedding.weight (3 rows: 0 = padding), embedding.layer_norm.{gamma,beta}.
"""
import torch
import torch.nn as nn

from tencentpretrain.layers.layer_norm import build_layernorm
from tencentpretrain.registry import EMBEDDINGS


@EMBEDDINGS.register("word")
class WordEmbedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_size)

    def forward(self, src, seg):
        return self.embedding(src)


@EMBEDDINGS.register("pos")
class PosEmbedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.max_seq_length = cfg.max_seq_length
        self.embedding = nn.Embedding(cfg.max_seq_length, cfg.emb_size)

    def forward(self, src, seg):
        length = src.shape[1]
        if length > self.max_seq_length:
            raise ValueError(f"sequence length {length} exceeds the model's max_seq_length "
                             f"{self.max_seq_length}")
        return self.embedding(torch.arange(length, device=src.device))[None]


@EMBEDDINGS.register("seg")
class SegEmbedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embedding = nn.Embedding(3, cfg.emb_size)

    def forward(self, src, seg):
        return self.embedding(seg)


class Embedding(nn.Module):
    """The sum of the embeddings named in the config (`embedding` or `tgt_embedding`)."""

    def __init__(self, cfg, names):
        super().__init__()
        self.names = list(names)
        for name in self.names:
            setattr(self, name, EMBEDDINGS.get(name)(cfg))
        self.layer_norm = None if cfg.remove_embedding_layernorm else \
            build_layernorm(cfg.layernorm, cfg.emb_size, cfg.eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def embed(self, src, seg):
        """The summed embeddings before LayerNorm (WID's embedding compactor acts here)."""
        out = None
        for name in self.names:
            e = getattr(self, name)(src, seg)
            out = e if out is None else out + e
        return out

    def forward(self, src, seg):
        out = self.embed(src, seg)
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return self.dropout(out)
