"""Transformer encoder and decoder layers, post-LN (BERT) or pre-LN (GPT-2)."""
import torch.nn as nn

from tencentpretrain.layers.attention import MultiHeadedAttention
from tencentpretrain.layers.feed_forward import PositionwiseFeedForward
from tencentpretrain.layers.layer_norm import build_layernorm


class TransformerLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg.hidden_size
        self.pre_ln = cfg.layernorm_positioning == "pre"
        self.self_attn = MultiHeadedAttention(h, cfg.heads_num, cfg.head_size, cfg.dropout)
        self.dropout_1 = nn.Dropout(cfg.dropout)
        self.layer_norm_1 = build_layernorm(cfg.layernorm, h, cfg.eps)
        self.feed_forward = PositionwiseFeedForward(h, cfg.feedforward_size, cfg.hidden_act)
        self.dropout_2 = nn.Dropout(cfg.dropout)
        self.layer_norm_2 = build_layernorm(cfg.layernorm, h, cfg.eps)

    def forward(self, hidden, mask):
        if self.pre_ln:
            x = self.layer_norm_1(hidden)
            hidden = hidden + self.dropout_1(self.self_attn(x, x, x, mask))
            return hidden + self.dropout_2(self.feed_forward(self.layer_norm_2(hidden)))
        hidden = self.layer_norm_1(hidden + self.dropout_1(self.self_attn(hidden, hidden, hidden, mask)))
        return self.layer_norm_2(hidden + self.dropout_2(self.feed_forward(hidden)))


class TransformerDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg.hidden_size
        self.pre_ln = cfg.layernorm_positioning == "pre"
        self.self_attn = MultiHeadedAttention(h, cfg.heads_num, cfg.head_size, cfg.dropout)
        self.context_attn = MultiHeadedAttention(h, cfg.heads_num, cfg.head_size, cfg.dropout)
        self.feed_forward = PositionwiseFeedForward(h, cfg.feedforward_size, cfg.hidden_act)
        self.dropout_1 = nn.Dropout(cfg.dropout)
        self.dropout_2 = nn.Dropout(cfg.dropout)
        self.dropout_3 = nn.Dropout(cfg.dropout)
        self.layer_norm_1 = build_layernorm(cfg.layernorm, h, cfg.eps)
        self.layer_norm_2 = build_layernorm(cfg.layernorm, h, cfg.eps)
        self.layer_norm_3 = build_layernorm(cfg.layernorm, h, cfg.eps)

    def forward(self, hidden, memory, self_mask, context_mask):
        if self.pre_ln:
            x = self.layer_norm_1(hidden)
            hidden = hidden + self.dropout_1(self.self_attn(x, x, x, self_mask))
            x = self.layer_norm_2(hidden)
            hidden = hidden + self.dropout_2(self.context_attn(x, memory, memory, context_mask))
            return hidden + self.dropout_3(self.feed_forward(self.layer_norm_3(hidden)))
        hidden = self.layer_norm_1(hidden + self.dropout_1(self.self_attn(hidden, hidden, hidden, self_mask)))
        hidden = self.layer_norm_2(
            hidden + self.dropout_2(self.context_attn(hidden, memory, memory, context_mask)))
        return self.layer_norm_3(hidden + self.dropout_3(self.feed_forward(hidden)))
