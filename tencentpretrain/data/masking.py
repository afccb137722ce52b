"""BERT masking: pick ~15% of the non-special tokens; 80% become [MASK], 10% a random token, 10% stay.

One function masks one instance with a numpy Generator; static masking (preprocess.py) and dynamic
masking (the loader) both call it, so the statistics are the same either way. Randomness comes only
from the Generator the caller passes, which is how masks stay reproducible: the loader derives it from
(seed, epoch, instance index), the processors from (seed, document offset, copy).
"""
from dataclasses import dataclass

import numpy as np

MASK_PROB = 0.15
MASK_TOKEN_PROB = 0.8    # of the selected positions: replaced by [MASK]
RANDOM_TOKEN_PROB = 0.1  # ... replaced by a random token; the remaining 10% keep their token


@dataclass
class MaskSpec:
    """What masking needs to know about the vocabulary, as lookup tables indexed by token id."""
    mask_id: int
    is_special: np.ndarray        # bool [V]: never selected ([PAD] [CLS] [SEP] [MASK])
    replace_ids: np.ndarray       # ids a selected token may be replaced by (no special tokens)
    is_continuation: np.ndarray | None = None  # bool [V]: "##piece"; set -> whole word masking
    prob: float = MASK_PROB

    @classmethod
    def build(cls, vocab_size, special_ids, mask_id, is_continuation=None, prob=MASK_PROB):
        is_special = np.zeros(vocab_size, dtype=bool)
        is_special[[i for i in special_ids if i is not None and 0 <= i < vocab_size]] = True
        replace_ids = np.flatnonzero(~is_special)
        return cls(mask_id, is_special, replace_ids, is_continuation, prob)


def continuation_table(tokens):
    """bool per vocab entry: True for pieces that continue a word (WordPiece '##x'; SentencePiece
    pieces without the '▁' word-start mark)."""
    spm = any(t.startswith("\u2581") for t in tokens)
    if spm:
        return np.array([not (t.startswith("\u2581") or t.startswith("<") or t.startswith("["))
                         for t in tokens], dtype=bool)
    return np.array([t.startswith("##") for t in tokens], dtype=bool)


def mask_instance(ids, rng, spec):
    """Mask one sequence of token ids.

    Returns (src, positions, targets): `src` is a masked copy of `ids`, `positions` the sorted
    selected positions and `targets` the original ids there. Exactly max(1, round(prob * n)) of the n
    maskable tokens are selected (fewer with whole word masking, which never splits a word).
    """
    ids = np.asarray(ids)
    cand_pos = np.flatnonzero(~spec.is_special[ids])
    if cand_pos.size == 0:
        return ids.copy(), cand_pos, ids[cand_pos]
    k = max(1, int(round(cand_pos.size * spec.prob)))
    if spec.is_continuation is None:
        # k distinct positions uniformly: the k smallest of random keys (cheaper than rng.choice)
        chosen = np.sort(cand_pos[np.argpartition(rng.random(cand_pos.size), k - 1)[:k]])
    else:
        chosen = _choose_whole_words(ids, cand_pos, k, rng, spec.is_continuation)
    src = ids.copy()
    r = rng.random(chosen.size)
    to_mask = chosen[r < MASK_TOKEN_PROB]
    to_random = chosen[(r >= MASK_TOKEN_PROB) & (r < MASK_TOKEN_PROB + RANDOM_TOKEN_PROB)]
    src[to_mask] = spec.mask_id
    src[to_random] = spec.replace_ids[rng.integers(0, spec.replace_ids.size, to_random.size)]
    return src, chosen, ids[chosen]


def _choose_whole_words(ids, cand_pos, k, rng, is_continuation):
    # A piece continues the word before it only if it is adjacent to it (no special token between).
    starts = ~(is_continuation[ids[cand_pos]] & np.r_[False, np.diff(cand_pos) == 1])
    word_of = np.cumsum(starts) - 1
    word_len = np.bincount(word_of)
    order = rng.permutation(word_len.size)
    # Whole words in random order while the total stays within k (always at least one word).
    taken = max(1, int(np.searchsorted(np.cumsum(word_len[order]), k, side="right")))
    return cand_pos[np.isin(word_of, order[:taken])]
