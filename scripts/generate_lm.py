r"""Continue text with a language model (a causal model with an LM head, e.g. models/gpt2/config.json).

    python scripts/generate_lm.py --load_model_path models/gpt2.bin --config_path models/gpt2/config.json \
        --vocab_path models/vocab.txt --test_path beginning.txt --prediction_path generated.txt \
        --seq_length 128 [--top_k 70] [--top_p 0] [--temperature 1.0] [--seed 7]

Each non-blank line of --test_path is a beginning, encoded as "[CLS] tokens" (cut to --seq_length);
tokens are added one at a time until the sequence holds --seq_length tokens. Each next token is drawn
from the softmax of the last position's logits divided by --temperature, keeping only the --top_k
most likely tokens (0: all) and then the smallest set whose probability reaches --top_p (0: off);
--top_k 1 is greedy decoding. Draws come from a generator seeded with --seed, so a run is repeatable.
For each beginning the output has the beginning on one line and the whole generated sequence, its
tokens joined (decoded by the SentencePiece model when one is given), on the next.

Guide: docs/migrating.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import torch  # noqa: E402

from tencentpretrain.errors import UserError, run_cli  # noqa: E402
from tencentpretrain.inference_utils import (HelpFormatter, check_positive, infer_opts,  # noqa: E402
                                            load_inference_model)
from tencentpretrain.tasks.readers import read_text_lines  # noqa: E402
from tencentpretrain.utils.io import atomic_write  # noqa: E402


def filter_logits(logits, top_k=0, top_p=0.0):
    """`logits` [V] with every token outside the top-k, then outside the top-p nucleus, set to -inf.

    top-k keeps ties of the k-th value; top-p keeps the most likely tokens up to and including the first
    one at which the cumulative probability passes `top_p`."""
    logits = logits.clone()
    if 0 < top_k < logits.numel():
        logits[logits < torch.topk(logits, top_k).values[-1]] = float("-inf")
    if top_p > 0.0:
        ordered, order = torch.sort(logits, descending=True, stable=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = torch.zeros_like(cumulative, dtype=torch.bool)
        drop[1:] = cumulative[:-1] > top_p  # shifted: the token that crosses the threshold stays
        logits[order[drop]] = float("-inf")
    return logits


@torch.no_grad()
def generate(model, ids, length, top_k, top_p, temperature, generator):
    """`ids` extended to `length` tokens by sampling (see the module docstring)."""
    device = next(model.parameters()).device
    src = torch.tensor([ids], dtype=torch.long, device=device)
    while src.shape[1] < length:
        hidden = model.encode(src, torch.ones_like(src))
        logits = model.target.lm.output_layer(hidden[0, -1]).float().cpu() / temperature
        probs = filter_logits(logits, top_k, top_p).softmax(-1)
        nxt = torch.multinomial(probs, 1, generator=generator)
        src = torch.cat([src, nxt.to(device)[None]], dim=1)
    return src[0].tolist()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    infer_opts(parser, batch_size=None)
    g = parser.add_argument_group("sampling")
    g.add_argument("--top_k", type=int, default=70, help="sample among the k most likely tokens (0: all; 1: greedy)")
    g.add_argument("--top_p", type=float, default=0.0, help="nucleus sampling threshold in (0, 1] (0: off)")
    g.add_argument("--temperature", type=float, default=1.0, help="divides the logits (> 0)")
    g.add_argument("--seed", type=int, default=7, help="seed of the sampling generator")
    args = parser.parse_args(argv)
    check_positive(args, "seq_length")
    if args.top_k < 0:
        raise UserError(f"--top_k must be 0 (off) or positive, got {args.top_k}")
    if not 0.0 <= args.top_p <= 1.0:
        raise UserError(f"--top_p must be in [0, 1] (0: off), got {args.top_p}")
    if not args.temperature > 0.0:
        raise UserError(f"--temperature must be positive, got {args.temperature} "
                        f"(for greedy decoding use --top_k 1)")
    lines = [line.strip() for line in read_text_lines(args.test_path, "--test_path") if line.strip()]
    model, tokenizer = load_inference_model(args, target="lm")
    if model.cfg.mask != "causal":
        print(f"note: {args.config_path} has mask '{model.cfg.mask}', not 'causal': the model sees no "
              f"left-to-right order and its continuations will be poor")
    generator = torch.Generator().manual_seed(args.seed)
    sp = getattr(tokenizer, "sp", None)
    blocks = []
    for line in lines:
        ids = ([tokenizer.cls_id] + tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line)))[:args.seq_length]
        out = generate(model, ids, args.seq_length, args.top_k, args.top_p, args.temperature, generator)
        text = sp.decode(out) if sp is not None else "".join(tokenizer.convert_ids_to_tokens(out))
        blocks.append(line + "\n" + text)
    with atomic_write(args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(blocks))
    print(f"{len(blocks)} texts of {args.seq_length} tokens generated -> {args.prediction_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
