"""The processor interface: what a processor declares about its instances, and how it yields them.

The declaration (class attributes) is read where datasets are written and read:
  token_target     what the tokens teach. "mlm": masked tokens, masks stored in the file (static) or
                   drawn by the loader (--dynamic_masking); "lm": next token, each instance a window
                   of n + 1 tokens the loader shifts into input and target.
  instance_arrays  one value per instance besides the tokens: array name -> dtype, in file order.
                   An array named "seg_split" starts segment 2 (the loader's segment ids).
  labels           target -> the instance array holding its label (bert: {"sp": "is_random_next"}).
  targets          derived: token_target plus the labels' targets (pretrain checks the model's).

The work: `process_block(lines, start, end)` turns the lines of one block of the corpus into instances,
dicts of `ShardWriter.add`'s arguments (tokens, the instance arrays, and mlm_positions/mlm_targets
under static masking). Every random draw comes from a Generator seeded by the byte offset of the
document (or block), so the output does not depend on how blocks are spread over processes.
"""
import numpy as np

from tencentpretrain.data.masking import mask_instance


class Processor:
    token_target = "mlm"
    instance_arrays = {}
    labels = {}
    targets = frozenset({"mlm"})
    by_document = False    # documents are separated by blank lines; blocks start at a document
    min_seq_length = 3     # special tokens plus one token of text
    corpus_format = ""     # said when the corpus yields nothing, e.g. " (one document per line)"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.targets = frozenset({cls.token_target, *cls.labels})

    # ------------------------------------------------------------------ what the options imply

    @classmethod
    def check_options(cls, opts):
        """UserError for options this processor cannot honour."""

    @classmethod
    def static_masking(cls, opts):
        """Masks are drawn now and stored in the file (not by the loader)."""
        return cls.token_target == "mlm" and not opts.dynamic_masking

    @classmethod
    def copies(cls, opts):
        """Copies of the corpus written: --dup_factor differently masked copies under static masking."""
        return opts.dup_factor if cls.static_masking(opts) else 1

    # ------------------------------------------------------------------ the work

    def __init__(self, opts, tokenizer, corpus, mask_spec):
        self.opts, self.tok, self.corpus, self.spec = opts, tokenizer, corpus, mask_spec
        self.L = opts.seq_length
        self.cls, self.sep = tokenizer.cls_id, tokenizer.sep_id
        self.static = self.static_masking(opts)
        self.n_copies = self.copies(opts)

    def encode(self, text):
        return self.tok.convert_tokens_to_ids(self.tok.tokenize(text)) if text.strip() else []

    def emit(self, tokens, rng, copies=None, **values):
        """One instance, or (static masking) `copies` differently masked copies of it."""
        if not self.static:
            yield dict(tokens=tokens, **values)
            return
        ids = np.asarray(tokens, dtype=np.int64)
        for _ in range(self.n_copies if copies is None else copies):
            src, positions, targets = mask_instance(ids, rng, self.spec)
            yield dict(tokens=src, mlm_positions=positions, mlm_targets=targets, **values)

    def process_block(self, lines, start, end):
        """Instances from `lines`, the (start, end, text) lines of the block [start, end)."""
        raise NotImplementedError

