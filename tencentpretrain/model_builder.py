"""Assemble a Model from a ModelConfig: each of the five components is chosen by name, and the
features the config has a block for (tencentpretrain/features.py) may replace the embedding and
adjust the built model."""
import torch.nn as nn

from tencentpretrain import features
from tencentpretrain.embeddings.embedding import Embedding
from tencentpretrain.errors import UserError
from tencentpretrain.models.model import Model
from tencentpretrain.registry import DECODERS, ENCODERS
from tencentpretrain.targets.target import Target


def build_embedding(cfg, names=None):
    """The encoder's embedding (`names` None; a feature may supply its own) or the decoder's (`names`)."""
    if names is None:
        for feature in features.active(cfg):
            embedding = feature.build_embedding(cfg)
            if embedding is not None:
                return embedding
    return Embedding(cfg, names or cfg.embedding)


def build_encoder(cfg):
    return ENCODERS.get(cfg.encoder)(cfg)


def init_weights(model, std=0.02):
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm gains."""
    for name, p in model.named_parameters():
        if name.endswith(("gamma", "beta")):
            continue
        if name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, 0.0, std)


def tie_weights(model, cfg):
    word = model.embedding.word.embedding.weight
    if cfg.tie_weights:
        if hasattr(model.target, "mlm"):
            model.target.mlm.linear_2.weight = word
        if hasattr(model.target, "lm"):
            model.target.lm.output_layer.weight = word
    if cfg.share_embedding and model.tgt_embedding is not None:
        model.tgt_embedding.word.embedding.weight = word


def build_model(cfg):
    if cfg.vocab_size is None:
        raise UserError("the model config has no vocab_size: the scripts set it from the "
                        "vocabulary; when building by hand, set cfg.vocab_size")
    if "word" not in cfg.embedding and (cfg.tie_weights or cfg.share_embedding):
        raise UserError("tie_weights/share_embedding need a 'word' embedding")
    embedding = build_embedding(cfg)
    encoder = build_encoder(cfg)
    tgt_embedding = decoder = None
    if cfg.decoder is not None:
        tgt_embedding = build_embedding(cfg, cfg.tgt_embedding)
        decoder = DECODERS.get(cfg.decoder)(cfg)
    model = Model(cfg, embedding, encoder, tgt_embedding, decoder, Target(cfg))
    init_weights(model)
    tie_weights(model, cfg)
    for feature in features.active(cfg):  # WID: identity compactors and the mask groups
        feature.on_model_built(model)
    return model
