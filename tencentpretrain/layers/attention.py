"""Multi-headed attention with TencentPretrain's parameter names (linear_layers.{0,1,2}, final_linear)."""
import math

import torch.nn as nn
import torch.nn.functional as F


class MultiHeadedAttention(nn.Module):
    def __init__(self, hidden_size, heads_num, head_size, dropout):
        super().__init__()
        self.heads_num = heads_num
        self.head_size = head_size
        inner = heads_num * head_size
        self.linear_layers = nn.ModuleList([nn.Linear(hidden_size, inner) for _ in range(3)])
        self.final_linear = nn.Linear(inner, hidden_size)
        self.dropout = dropout
        # Scores are divided by sqrt(head_size); WID's merge folds a correction into W_q when the
        # head size changes, so this stays the textbook value.
        self.scale = 1.0 / math.sqrt(head_size)

    def forward(self, query, key, value, mask):
        """query [B, Lq, H], key/value [B, Lk, H]; mask: additive float [B, 1, Lq, Lk] or None."""
        batch, q_len, _ = query.shape
        k_len = key.shape[1]

        def heads(x, length):
            return x.view(batch, length, -1, self.head_size).transpose(1, 2)

        q = heads(self.linear_layers[0](query), q_len)
        k = heads(self.linear_layers[1](key), k_len)
        v = heads(self.linear_layers[2](value), k_len)
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, q_len, -1)
        return self.final_linear(out)
