import torch.nn as nn


class Model(nn.Module):
    """Embedding -> encoder [-> target embedding -> decoder] -> target, as in TencentPretrain."""

    def __init__(self, cfg, embedding, encoder, tgt_embedding, decoder, target):
        super().__init__()
        self.cfg = cfg
        self.embedding = embedding
        self.encoder = encoder
        self.tgt_embedding = tgt_embedding
        self.decoder = decoder
        self.target = target

    def encode(self, src, seg):
        return self.encoder(self.embedding(src, seg), seg)

    def hidden(self, batch):
        hidden = self.encode(batch["src"], batch["seg"])
        if self.decoder is not None:
            tgt = self.tgt_embedding(batch["tgt_in"], batch["tgt_seg"])
            hidden = self.decoder(hidden, batch["seg"], tgt, batch["tgt_seg"])
        return hidden

    def forward(self, batch):
        """A batch dict (see the data loader) -> ModelOutput(loss, metrics)."""
        return self.target(self.hidden(batch), batch)
