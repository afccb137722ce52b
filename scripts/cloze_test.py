r"""Masked-word predictions of a model with an MLM head (a cloze test).

    python scripts/cloze_test.py --load_model_path models/model.bin --config_path models/bert/base_config.json \
        --test_path sentences.txt --prediction_path cloze.txt [--topn 10] [--seed 7]

Each non-blank line of --test_path is encoded as "[CLS] tokens [SEP]" (cut to --seq_length). Where the
line contains [MASK], the model predicts those positions; otherwise one random token of the line is
masked (chosen with --seed) and its original is the correct answer. For each masked position the output
has four lines: the masked sentence (its tokens joined, padding left out), "Predicted answer: " and the
--topn most likely tokens, best first, "Correct answer: " and the original token (left out when the
line brought its own [MASK]), and a blank line.

Guide: docs/migrating.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import random  # noqa: E402

import torch  # noqa: E402

from tencentpretrain.errors import UserError, run_cli  # noqa: E402
from tencentpretrain.inference_utils import (HelpFormatter, check_positive, encode_lines, infer_opts,  # noqa: E402
                                            load_inference_model, padded_batches)
from tencentpretrain.tasks.readers import read_text_lines  # noqa: E402
from tencentpretrain.utils.io import atomic_write  # noqa: E402


def mask_lines(lines, tokenizer, seq_length, seed):
    """[(ids, masked positions, original ids or None)] for the non-blank lines."""
    rng = random.Random(seed)
    rows, _ = encode_lines(lines, tokenizer, seq_length)
    out = []
    for ids in rows:
        positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
        if positions:
            out.append((ids, positions, None))
            continue
        pos = rng.randint(1, len(ids) - 2)  # a real token, not [CLS] or [SEP]
        original = ids[pos]
        ids = ids[:pos] + [tokenizer.mask_id] + ids[pos + 1:]
        out.append((ids, [pos], [original]))
    return out


@torch.no_grad()
def predict(model, tokenizer, instances, batch_size, topn):
    """Per instance, per masked position: the `topn` token ids by MLM logit, best first (ties by id)."""
    device = next(model.parameters()).device
    rows = [ids for ids, _, _ in instances]
    out = []
    for src, seg in padded_batches(rows, batch_size, tokenizer.pad_id, device):
        hidden = model.encode(src, seg)
        for row in range(len(src)):
            positions = instances[len(out)][1]
            logits = model.target.mlm.logits(hidden[row, positions]).float()
            out.append(torch.argsort(logits, dim=-1, descending=True, stable=True)[:, :topn].tolist())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    infer_opts(parser)
    parser.add_argument("--topn", type=int, default=10, help="predicted tokens written per masked position")
    parser.add_argument("--seed", type=int, default=7, help="picks the masked token of lines without [MASK]")
    args = parser.parse_args(argv)
    check_positive(args, "batch_size", "topn")
    if args.seq_length < 3:
        raise UserError(f"--seq_length must be at least 3 ([CLS], a token, [SEP]), got {args.seq_length}")
    lines = read_text_lines(args.test_path, "--test_path")
    model, tokenizer = load_inference_model(args, target="mlm")
    instances = mask_lines(lines, tokenizer, args.seq_length, args.seed)
    if not instances:
        raise UserError(f"{args.test_path} has no sentence with a token in it")
    predictions = predict(model, tokenizer, instances, args.batch_size, min(args.topn, tokenizer.vocab_size))
    tokens = tokenizer.convert_ids_to_tokens
    with atomic_write(args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
        for (ids, positions, originals), best in zip(instances, predictions):
            sentence = "".join(tokens(ids))
            for k, top in enumerate(best):
                f.write(sentence + "\n")
                f.write("Predicted answer: " + " ".join(tokens(top)) + "\n")
                if originals is not None:
                    f.write("Correct answer: " + tokens([originals[k]])[0] + "\n")
                f.write("\n")
    masked = sum(len(p) for _, p, _ in instances)
    print(f"{masked} masked positions in {len(instances)} sentences -> {args.prediction_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
