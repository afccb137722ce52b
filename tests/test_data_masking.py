"""Masking statistics: ~15% of the maskable tokens, 80/10/10, never a special token, whole words."""
import numpy as np

from tencentpretrain.data.masking import MaskSpec, continuation_table, mask_instance

V, PAD, CLS, SEP, MASK = 1000, 0, 1, 2, 3


def _spec(**kw):
    return MaskSpec.build(V, [PAD, CLS, SEP, MASK], MASK, **kw)


def test_mask_rates_and_split():
    spec, rng = _spec(), np.random.default_rng(0)
    selected = maskable = to_mask = to_random = kept = 0
    for _ in range(400):
        n = int(rng.integers(20, 120))
        ids = np.concatenate([[CLS], rng.integers(5, V, n), [SEP], np.full(7, PAD)])
        src, pos, tgt = mask_instance(ids, np.random.default_rng(int(rng.integers(1 << 30))), spec)
        assert np.array_equal(tgt, ids[pos]) and np.all(np.diff(pos) > 0)
        assert pos.size == max(1, round(0.15 * n))
        assert not np.isin(ids[pos], [PAD, CLS, SEP, MASK]).any()           # no special token selected
        untouched = np.setdiff1d(np.arange(ids.size), pos)
        assert np.array_equal(src[untouched], ids[untouched])
        selected += pos.size
        maskable += n
        to_mask += int((src[pos] == MASK).sum())
        kept += int((src[pos] == ids[pos]).sum())
        to_random += int(((src[pos] != MASK) & (src[pos] != ids[pos])).sum())
        assert not np.isin(src[pos][src[pos] != MASK], [PAD, CLS, SEP]).any()  # random ids are not special
    assert abs(selected / maskable - 0.15) < 0.005
    assert abs(to_mask / selected - 0.8) < 0.02
    assert abs(to_random / selected - 0.1) < 0.02
    assert abs(kept / selected - 0.1) < 0.02  # (a random draw equal to the original counts as kept: ~0.1%)


def test_same_generator_same_mask():
    ids = np.arange(5, 105)
    a = mask_instance(ids, np.random.default_rng([7, 0, 3]), _spec())
    b = mask_instance(ids, np.random.default_rng([7, 0, 3]), _spec())
    c = mask_instance(ids, np.random.default_rng([7, 1, 3]), _spec())
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_only_special_tokens_masks_nothing():
    src, pos, tgt = mask_instance(np.array([CLS, SEP, PAD]), np.random.default_rng(0), _spec())
    assert pos.size == 0 and list(src) == [CLS, SEP, PAD]


def test_whole_word_masking_keeps_words_together():
    tokens = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" if i % 3 else f"##p{i}" for i in range(V - 4)]
    cont = continuation_table(tokens)
    assert cont[tokens.index("##p3")] and not cont[tokens.index("w1")]
    spec, rng = _spec(is_continuation=cont), np.random.default_rng(1)
    selected = maskable = 0
    for _ in range(200):
        ids = np.concatenate([[CLS], rng.integers(4, V, 80), [SEP]])
        _, pos, _ = mask_instance(ids, np.random.default_rng(int(rng.integers(1 << 30))), spec)
        chosen = np.zeros(ids.size, bool)
        chosen[pos] = True
        # a continuation piece is chosen exactly when the piece before it is (same word)
        for i in range(2, ids.size - 1):
            if cont[ids[i]]:
                assert chosen[i] == chosen[i - 1]
        assert not chosen[0] and not chosen[-1]
        selected += pos.size
        maskable += 80
    assert 0.10 < selected / maskable <= 0.16


def test_sentencepiece_continuation():
    cont = continuation_table(["<pad>", "\u2581the", "re", "\u2581cat", "s"])
    assert cont.tolist() == [False, False, True, False, True]
