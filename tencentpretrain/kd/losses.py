"""The distillation loss terms, as functions of student and teacher tensors (fp32 inside).

Every term is a divergence, not a cross-entropy, so it is exactly 0 when the student computes what the
teacher computes and positive otherwise (soft-target cross-entropy differs from the KL used here by the
teacher's entropy, a constant: the gradients are the same). `valid` [B, L] marks non-padding positions.
"""
import math

import torch
import torch.nn.functional as F

HIDDEN = -1e9  # the score of a padded key: probability exactly 0, log-probability finite


def _kl_rows(log_t, log_s):
    """KL(teacher || student) of each row of log-probabilities, summed over the last axis."""
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def soft_target_kl(student_logits, teacher_logits, temperature):
    """DistilBERT: KL of the MLM distributions softened by `temperature`, x T^2 (so the gradient scale does
    not depend on T), averaged over the predicted positions [N, V]."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return _kl_rows(log_t, log_s).mean() * t * t


def cosine(student_hidden, teacher_hidden, valid):
    """DistilBERT's cosine loss: 1 - cos(student, teacher) of the hidden vectors, averaged over positions;
    computed as |a - b|^2 / 2 of the unit vectors a, b (the same value, and exactly 0 when a = b)."""
    s = F.normalize(student_hidden[valid].float(), dim=-1)
    t = F.normalize(teacher_hidden[valid].float(), dim=-1)
    return 0.5 * (s - t).pow(2).sum(-1).mean()


def hidden_mse(student_hidden, teacher_hidden, valid):
    """TinyBERT: mean squared error of one pair of hidden states over the non-padding positions."""
    return F.mse_loss(student_hidden[valid].float(), teacher_hidden[valid].float())


def attention_mse(student_scores, teacher_scores, valid):
    """TinyBERT: mean squared error of the attention scores [B, heads, L, L] (before the softmax) over the
    query-key pairs of non-padding positions, all heads."""
    pairs = (valid[:, :, None] & valid[:, None, :])[:, None].expand_as(student_scores)
    return F.mse_loss(student_scores.float()[pairs], teacher_scores.float()[pairs])


def split_heads(x, heads):
    """[B, h, L, d] per-head vectors -> [B, heads, L, h * d / heads]: the concatenated heads re-split
    into `heads` relation heads (MiniLMv2); the same tensor when heads == h."""
    batch, h, length, d = x.shape
    if heads == h:
        return x
    return x.transpose(1, 2).reshape(batch, length, heads, h * d // heads).transpose(1, 2)


def relation_log_probs(x, y, heads, valid):
    """log softmax(x y^T / sqrt(d)) per relation head, with padded keys hidden: [B, heads, L, L].
    For x = queries, y = keys and heads = the attention heads this is the attention distribution."""
    x, y = split_heads(x.float(), heads), split_heads(y.float(), heads)
    scores = torch.matmul(x, y.transpose(-1, -2)) / math.sqrt(x.shape[-1])
    scores = scores.masked_fill(~valid[:, None, None, :], HIDDEN)
    return F.log_softmax(scores, dim=-1)


def relation_kl(student, teacher, heads, valid):
    """MiniLM: KL(teacher || student) of the relations, averaged over relation heads and non-padding
    queries. `student` and `teacher` are (x, y) pairs of per-head tensors, e.g. (queries, keys)."""
    log_s = relation_log_probs(*student, heads, valid)
    log_t = relation_log_probs(*teacher, heads, valid)
    kl = _kl_rows(log_t, log_s)  # [B, heads, L]
    return kl.transpose(1, 2)[valid].mean()
