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

`lines` yields corpus.Piece(start, end, text, line_end): a line longer than 1 MiB comes in several
pieces, so that memory stays bounded; `encode_pieces` tokenizes them and says which line each belongs
to, and `full_windows` cuts token streams in time linear in their length.
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

    def encode_pieces(self, pieces):
        """(start of its line, piece, token ids) for each corpus piece; a long line's pieces share the
        start. Tokenizing the pieces gives the whole line's tokens (see corpus.py)."""
        line_start = None
        for piece in pieces:
            if line_start is None:
                line_start = piece.start
            yield line_start, piece, self.encode(piece.text)
            if piece.line_end:
                line_start = None

    def pack(self, lines, n):
        """The lines' tokens, each line with tokens followed by [SEP], in windows of n tokens (across
        lines); the last window, possibly empty, holds the rest."""
        buf, line_has_tokens = [], False
        for _, piece, ids in self.encode_pieces(lines):
            buf += ids
            line_has_tokens = line_has_tokens or bool(ids)
            if piece.line_end and line_has_tokens:
                buf.append(self.sep)
                line_has_tokens = False
            windows, buf = full_windows(buf, n)
            yield from windows
        yield buf

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
        """Instances from `lines`, the corpus.Piece's of the lines of the block [start, end)."""
        raise NotImplementedError


def is_blank_line(line_start, piece):
    """A whole line (not a piece of a long one) holding only whitespace: a document boundary."""
    return piece.line_end and piece.start == line_start and not piece.text.strip()


def full_windows(buf, n):
    """The full windows of `n` tokens at the front of the list `buf`, and the rest (fewer than n tokens).
    Cut by index: linear in len(buf), where repeated `del buf[:n]` is quadratic."""
    k = len(buf) - len(buf) % n
    return [buf[i:i + n] for i in range(0, k, n)], buf[k:]
