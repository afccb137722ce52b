"""Corpus -> instances: the data processors (mlm, bert, lm) and the preprocessing pipeline.

Pipeline. The corpus is cut into blocks of about `block_bytes` at line boundaries (document boundaries,
i.e. after a blank line, for bert); the cut points depend only on the file, never on --processes_num.
Each worker takes a contiguous run of blocks, streams their lines and appends instances to its own
shard files; the shards are then concatenated in order (dataset.assemble). Two rules make N processes
write exactly what one writes:
  - every random draw comes from a Generator seeded by (seed, byte offset of the document, copy)
    (or of the block, for the packing processors), never from a stream shared across documents;
  - packing across lines (mlm --full_sentences, lm) restarts at each block, so a worker needs no state
    from the blocks before its own.
Memory: one block's documents (bert) or one line plus one pending instance (others), and one shard
chunk of instances.

Copies: static masking writes --dup_factor differently-masked copies of each instance; bert writes
--dup_factor copies of each document's pairs (different splits, pairings and, if static, masks) even
with --dynamic_masking, as TencentPretrain does; mlm with --dynamic_masking and lm write one copy.
"""
import hashlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from tencentpretrain.data.dataset import DatasetHeader, ShardWriter, assemble, position_dtype, token_dtype
from tencentpretrain.data.masking import MaskSpec, continuation_table, mask_instance
from tencentpretrain.errors import UserError
from tencentpretrain.registry import PROCESSORS


@dataclass
class PreprocessOptions:
    corpus_path: str
    dataset_path: str
    data_processor: str = "bert"
    tokenizer: str = "bert"
    vocab_path: str | None = None
    spm_model_path: str | None = None
    do_lower_case: bool = True
    seq_length: int = 128
    dup_factor: int = 5
    short_seq_prob: float = 0.1
    full_sentences: bool = False
    dynamic_masking: bool = False
    whole_word_masking: bool = False
    seed: int = 7
    processes_num: int = 1
    block_bytes: int = 1 << 17   # unit of work and of packing restarts; fixed so N procs == 1 proc


# ---------------------------------------------------------------------------------------- corpus


class Corpus:
    """Byte-addressed reads of a UTF-8 text file; invalid bytes raise a UserError naming the line."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)
        self.count = None  # a _LineCounter while a worker reads its blocks

    def lines(self, start, end=None, counted=True):
        """Yield (start, end, text) for each line that starts in [start, end); text has no newline.
        `start` must be a line start."""
        end = self.size if end is None else end
        count = self.count if counted else None
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                raw = f.readline()
                if not raw:
                    return
                if count is not None:
                    count.tick()
                yield pos, pos + len(raw), self._decode(raw, pos)
                pos += len(raw)

    def lines_after(self, offset):
        """Lines from the first line start at or after `offset` to the end of the file."""
        return self.lines(self.next_line_start(offset), counted=False)

    def next_line_start(self, offset):
        if offset <= 0:
            return 0
        with open(self.path, "rb") as f:
            f.seek(offset - 1)
            return offset - 1 + len(f.readline())

    def block_starts(self, block_bytes, by_document):
        """Start offsets of the blocks: the first line start at or after each multiple of block_bytes
        (for by_document: the first line after a blank line)."""
        starts = [0]
        with open(self.path, "rb") as f:
            k = 1
            while k * block_bytes < self.size:
                pos = self.next_line_start(k * block_bytes)
                if by_document:
                    f.seek(pos)
                    while pos < self.size:
                        raw = f.readline()
                        pos += len(raw)
                        if not raw.strip():
                            break
                if pos >= self.size:
                    break
                if pos > starts[-1]:
                    starts.append(pos)
                k = max(k + 1, pos // block_bytes + 1)
        return starts

    def _decode(self, raw, pos):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{self.path}, line {self.line_number(pos)}: not valid UTF-8 (byte "
                            f"0x{raw[err.start]:02x} at column {err.start + 1}); convert the corpus to UTF-8, "
                            f"e.g. iconv -f latin1 -t utf-8") from None
        if pos == 0 and text.startswith("\ufeff"):  # byte order mark
            text = text[1:]
        return text.rstrip("\r\n")

    def line_number(self, pos):
        """1-based number of the line starting at byte `pos` (only for error messages)."""
        count, done = 0, 0
        with open(self.path, "rb") as f:
            while done < pos:
                chunk = f.read(min(1 << 22, pos - done))
                count += chunk.count(b"\n")
                done += len(chunk)
        return count + 1


# ---------------------------------------------------------------------------------------- processors


class Processor:
    """Turns the lines of one block into instances (dicts of ShardWriter.add's arguments)."""
    by_document = False   # bert: documents are separated by blank lines, blocks align to them
    min_seq_length = 3

    def __init__(self, opts, tokenizer, corpus, mask_spec):
        self.opts, self.tok, self.corpus, self.spec = opts, tokenizer, corpus, mask_spec
        self.L = opts.seq_length
        self.cls, self.sep = tokenizer.cls_id, tokenizer.sep_id
        self.static = not opts.dynamic_masking
        self.copies = opts.dup_factor if self.static else 1

    def encode(self, text):
        return self.tok.convert_tokens_to_ids(self.tok.tokenize(text)) if text.strip() else []

    def emit(self, tokens, rng, copies=None, **fields):
        """One instance, or (static masking) `copies` differently masked copies of it."""
        if not self.static:
            yield dict(tokens=tokens, **fields)
            return
        ids = np.asarray(tokens, dtype=np.int64)
        for _ in range(self.copies if copies is None else copies):
            src, positions, targets = mask_instance(ids, rng, self.spec)
            yield dict(tokens=src, mlm_positions=positions, mlm_targets=targets, **fields)

    def process_block(self, start, end):
        raise NotImplementedError


@PROCESSORS.register("mlm")
class MlmProcessor(Processor):
    """One document per line. Each line -> [CLS] tokens [SEP] instances of at most seq_length tokens
    (a long line is split). --full_sentences (RoBERTa): the lines' tokens, each line followed by
    [SEP], are packed across line boundaries into [CLS] + (seq_length - 1) token instances."""

    def process_block(self, start, end):
        if self.opts.full_sentences:
            yield from self._packed(start, end)
            return
        n = self.L - 2
        for pos, _, text in self.corpus.lines(start, end):
            ids = self.encode(text)
            rng = np.random.default_rng([self.opts.seed, pos]) if ids and self.static else None
            for s in range(0, len(ids), n):
                yield from self.emit([self.cls] + ids[s:s + n] + [self.sep], rng)

    def _packed(self, start, end):
        rng = np.random.default_rng([self.opts.seed, start])
        n, buf = self.L - 1, []
        for _, _, text in self.corpus.lines(start, end):
            ids = self.encode(text)
            if ids:
                buf += ids + [self.sep]
            while len(buf) >= n:
                yield from self.emit([self.cls] + buf[:n], rng)
                del buf[:n]
        if any(t != self.sep for t in buf):
            yield from self.emit([self.cls] + buf, rng)


@PROCESSORS.register("lm")
class LmProcessor(Processor):
    """All lines streamed, each followed by [SEP], packed into windows of seq_length + 1 tokens:
    the loader feeds window[:-1] and predicts window[1:]."""
    min_seq_length = 2

    def __init__(self, *args):
        super().__init__(*args)
        self.static, self.copies = False, 1  # no masking

    def process_block(self, start, end):
        n, buf = self.L + 1, []
        for _, _, text in self.corpus.lines(start, end):
            ids = self.encode(text)
            if ids:
                buf += ids + [self.sep]
            while len(buf) >= n:
                yield {"tokens": buf[:n]}
                del buf[:n]
        if len(buf) >= 2:
            yield {"tokens": buf}


@PROCESSORS.register("bert")
class BertProcessor(Processor):
    """Documents separated by blank lines, one sentence per line (Google's create_pretraining_data):
    sentences are gathered up to a target length (seq_length - 3, or with probability short_seq_prob a
    random shorter one), split at a random point into A and B; half the time B is replaced by sentences
    from another document (is_random_next = 1) and the unused sentences go back to the pool. Pairs are
    truncated longest-first (from the front or the back at random). [CLS] A [SEP] B [SEP], segments 1/2.
    The random document is drawn, as in TencentPretrain's per-worker document buffer, from the other
    documents of the same block (about block_bytes of text, held tokenized in memory); a block of
    one document draws from a random byte of the whole corpus instead."""
    by_document = True
    min_seq_length = 5

    def __init__(self, *args):
        super().__init__(*args)
        self.copies = self.opts.dup_factor  # different pairs per copy, masked or not

    def process_block(self, start, end):
        docs, doc = [], []  # docs: (sentences, first byte, end byte)
        for pos, line_end, text in self.corpus.lines(start, end):
            if not text.strip():
                if doc:
                    docs.append((doc, doc_start, pos))
                doc = []
                continue
            ids = self.encode(text)
            if ids:
                if not doc:
                    doc_start = pos
                doc.append(ids)
        if doc:
            docs.append((doc, doc_start, end))
        for k in range(len(docs)):
            for copy in range(self.copies):
                rng = np.random.default_rng([self.opts.seed, docs[k][1], copy])
                yield from self._pairs(docs, k, rng)

    def _pairs(self, docs, k, rng):
        doc = docs[k][0]
        max_tokens = self.L - 3
        target = max_tokens
        if rng.random() < self.opts.short_seq_prob:
            target = int(rng.integers(2, max_tokens + 1))
        chunk, length, i = [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                a = _flatten(chunk[:a_end])
                b = None
                if len(chunk) == 1 or rng.random() < 0.5:
                    b = self._random_sentences(rng, docs, k, target - len(a))
                if b is not None:
                    is_random = 1
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    is_random, b = 0, _flatten(chunk[a_end:])
                a, b = _truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    yield from self.emit([self.cls] + a + [self.sep] + b + [self.sep], rng, copies=1,
                                         seg_split=len(a) + 2, is_random_next=is_random)
                chunk, length = [], 0
            i += 1

    def _random_sentences(self, rng, docs, k, target):
        """Consecutive sentences of another document, from a random one on, up to `target` tokens
        (at least one sentence)."""
        if len(docs) > 1:
            j = int(rng.integers(0, len(docs) - 1))
            other = docs[j + (j >= k)][0]
            out, n = [], 0
            for ids in other[int(rng.integers(0, len(other))):]:
                out.append(ids)
                n += len(ids)
                if n >= target:
                    break
            return _flatten(out)
        return self._random_sentences_in_file(rng, docs[k][1], docs[k][2], target)

    def _random_sentences_in_file(self, rng, doc_start, doc_end, target):
        """From the first line after a random byte of the corpus, outside [doc_start, doc_end). The
        last try accepts the same document (a corpus of one document has no other)."""
        for attempt in range(10):
            out, n = [], 0
            for pos, _, text in self.corpus.lines_after(int(rng.integers(0, self.corpus.size))):
                if attempt < 9 and doc_start <= pos < doc_end:
                    break
                if not text.strip():
                    if out:
                        break  # end of that document
                    continue
                ids = self.encode(text)
                if ids:
                    out.append(ids)
                    n += len(ids)
                    if n >= target:
                        break
            if out:
                return _flatten(out)
        return None


def _flatten(sentences):
    return [t for s in sentences for t in s]


def _truncate_pair(a, b, max_tokens, rng):
    """Trim the longer of a, b one token at a time until they fit (closed form), taking each
    segment's trimmed tokens from its front or back at random."""
    la, lb = len(a), len(b)
    excess = la + lb - max_tokens
    if excess <= 0:
        return a, b
    r = min(excess, abs(la - lb))
    la, lb = (la - r, lb) if la > lb else (la, lb - r)
    excess -= r
    la, lb = la - excess // 2, lb - (excess + 1) // 2  # equal lengths: b first, then alternating
    fa, fb = int(rng.binomial(len(a) - la, 0.5)), int(rng.binomial(len(b) - lb, 0.5))
    return a[fa:fa + la], b[fb:fb + lb]


# ---------------------------------------------------------------------------------------- pipeline


def preprocess(opts, log=sys.stderr):
    """Preprocess `opts.corpus_path` into the dataset file `opts.dataset_path`; returns its header.
    Progress goes to `log` every few seconds, and a summary line at the end."""
    t0 = time.time()
    processor = _validate(opts)
    tokenizer = build_tokenizer_for(opts)
    corpus = Corpus(opts.corpus_path)
    header = _make_header(opts, tokenizer, corpus)
    starts = corpus.block_starts(opts.block_bytes, processor.by_document)
    groups = _split(list(zip(starts, starts[1:] + [corpus.size])), opts.processes_num, corpus.size)
    out_dir = os.path.dirname(os.path.abspath(opts.dataset_path))
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".preprocess-", dir=out_dir)
    report = _Reporter(corpus.size, log, t0)
    try:
        jobs = [(opts, header, group, os.path.join(tmp, f"shard{i}")) for i, group in enumerate(groups)]
        if len(jobs) == 1:
            results = [_work(jobs[0], report.add)]
        else:
            results = _run_pool(jobs, report)
        lines = sum(r["lines"] for r in results)
        if sum(r["instances"] for r in results) == 0:
            raise UserError(f"corpus {opts.corpus_path} yields no instance for the '{opts.data_processor}' "
                            f"processor ({lines} lines, all blank or without tokens); nothing written. Give a "
                            "corpus with text in it" + (" (documents separated by blank lines, one sentence "
                                                         "per line)" if opts.data_processor == "bert" else ""))
        header.corpus["lines"] = lines
        extra = {}
        if opts.whole_word_masking and opts.dynamic_masking:
            extra["is_continuation"] = _continuation(tokenizer).astype(np.uint8)
        assemble(opts.dataset_path, header, [r["prefix"] for r in results], extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    secs = max(time.time() - t0, 1e-9)
    print(f"preprocess: wrote {header.instances_num} instances ({header.tokens_num} tokens) from {lines} lines "
          f"to {opts.dataset_path} in {secs:.1f} s ({lines / secs:.0f} lines/s, workers: {len(jobs)})",
          file=log, flush=True)
    return header


def build_tokenizer_for(opts):
    from tencentpretrain.data.tokenizers import build_tokenizer
    tok = build_tokenizer(opts.tokenizer, vocab_path=opts.vocab_path, spm_model_path=opts.spm_model_path,
                          do_lower_case=opts.do_lower_case)
    ids = {role: getattr(tok, f"{role}_id", None) for role in ("pad", "unk", "cls", "sep", "mask")}
    missing = [role for role, i in ids.items() if i is None]
    if missing or len(set(ids.values())) < len(ids):
        raise UserError(f"vocabulary {opts.spm_model_path or opts.vocab_path or 'default'} lacks distinct special "
                        f"tokens for {', '.join(missing) or 'pad/unk/cls/sep/mask'} (ids {ids}); use a vocab "
                        "with [PAD] [UNK] [CLS] [SEP] [MASK]")
    return tok


def mask_spec_for(tokenizer, whole_word_masking=False):
    t = tokenizer
    return MaskSpec.build(t.vocab_size, [t.pad_id, t.cls_id, t.sep_id, t.mask_id], t.mask_id,
                          _continuation(t) if whole_word_masking else None)


def _continuation(tokenizer):
    return continuation_table(tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size))))


def _validate(opts):
    if opts.data_processor not in PROCESSORS:
        raise UserError(f"unknown --data_processor '{opts.data_processor}'; choose one of "
                        f"{', '.join(PROCESSORS.names())}")
    processor = PROCESSORS.get(opts.data_processor)
    path = opts.corpus_path
    if not os.path.exists(path):
        raise UserError(f"corpus not found: {path} (--corpus_path)")
    if not os.path.isfile(path):
        raise UserError(f"--corpus_path {path} is not a file")
    if os.path.getsize(path) == 0:
        raise UserError(f"corpus {path} is empty; nothing to preprocess")
    if os.path.isdir(opts.dataset_path):
        raise UserError(f"--dataset_path {opts.dataset_path} is a directory; give a file name, e.g. dataset.tpd")
    if opts.spm_model_path and not os.path.isfile(opts.spm_model_path):
        raise UserError(f"SentencePiece model not found: {opts.spm_model_path} (--spm_model_path)")
    if opts.seq_length < processor.min_seq_length:
        raise UserError(f"--seq_length {opts.seq_length} is too small for the '{opts.data_processor}' processor "
                        f"(at least {processor.min_seq_length}: its special tokens plus text); use e.g. 128")
    if opts.dup_factor < 1 or opts.processes_num < 1:
        raise UserError("--dup_factor and --processes_num must be at least 1")
    if not 0.0 <= opts.short_seq_prob <= 1.0:
        raise UserError(f"--short_seq_prob {opts.short_seq_prob} must be between 0 and 1")
    if opts.full_sentences and opts.data_processor == "bert":
        raise UserError("--full_sentences packs lines for the mlm processor; bert builds sentence pairs")
    if opts.whole_word_masking and opts.data_processor == "lm":
        raise UserError("--whole_word_masking applies to the mlm and bert processors; lm has no masking")
    return processor


def _make_header(opts, tok, corpus):
    vocab_file = opts.spm_model_path or opts.vocab_path
    if vocab_file is None:
        from tencentpretrain.resources import default_vocab_path
        vocab_file = default_vocab_path()
    from tencentpretrain.resources import resolve
    vocab_file = resolve(vocab_file)
    sha = None
    if os.path.isfile(vocab_file):
        with open(vocab_file, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
    lm = opts.data_processor == "lm"
    copies = opts.dup_factor if (opts.data_processor == "bert" or not (opts.dynamic_masking or lm)) else 1
    return DatasetHeader(
        processor=opts.data_processor, seq_length=opts.seq_length, vocab_size=tok.vocab_size,
        special_ids={r: int(getattr(tok, f"{r}_id")) for r in ("pad", "unk", "cls", "sep", "mask")},
        dynamic_masking=bool(opts.dynamic_masking or lm), token_dtype=token_dtype(tok.vocab_size),
        position_dtype=position_dtype(opts.seq_length), whole_word_masking=opts.whole_word_masking,
        full_sentences=opts.full_sentences, dup_factor=copies, seed=opts.seed,
        short_seq_prob=opts.short_seq_prob, tokenizer=opts.tokenizer, do_lower_case=opts.do_lower_case,
        vocab_path=os.path.abspath(vocab_file), vocab_sha256=sha,
        corpus={"path": os.path.abspath(opts.corpus_path), "bytes": corpus.size}, block_bytes=opts.block_bytes)


def _split(blocks, n, size):
    """Contiguous runs of blocks, about equal in bytes, one per process (fewer if few blocks)."""
    groups = [[] for _ in range(n)]
    for start, end in blocks:
        groups[min(n - 1, (start + end) * n // (2 * size))].append((start, end))
    return [g for g in groups if g]


def _work(job, progress):
    """One worker: the instances of its blocks, in order, into its shard files."""
    opts, header, blocks, prefix = job
    tok = build_tokenizer_for(opts)
    corpus = Corpus(opts.corpus_path)
    processor = PROCESSORS.get(opts.data_processor)(opts, tok, corpus, mask_spec_for(tok, opts.whole_word_masking))
    writer = ShardWriter(prefix, header)
    lines = 0
    for start, end in blocks:
        counted = _LineCounter(corpus, progress)
        for instance in processor.process_block(start, end):
            writer.add(**instance)
        lines += counted.finish(end - start)
    return dict(writer.close(), lines=lines)


class _LineCounter:
    """Counts the lines a block's reading yields (not the random look-ups) and reports progress."""

    def __init__(self, corpus, progress):
        self.corpus, self.progress, self.lines, self.reported = corpus, progress, 0, 0
        corpus.count = self

    def tick(self):
        self.lines += 1
        if self.lines - self.reported >= 1000:
            self.progress(self.lines - self.reported, 0)
            self.reported = self.lines

    def finish(self, nbytes):
        self.progress(self.lines - self.reported, nbytes)
        self.corpus.count = None
        return self.lines


_shared = None  # (lines, bytes) multiprocessing.Values, set in each pool worker


def _init_pool(lines, nbytes):
    global _shared
    _shared = (lines, nbytes)


def _pool_work(job):
    def progress(lines, nbytes):
        for value, n in zip(_shared, (lines, nbytes)):
            with value.get_lock():
                value.value += n
    return _work(job, progress)


def _run_pool(jobs, report):
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    lines, nbytes = ctx.Value("q", 0), ctx.Value("q", 0)
    with ctx.Pool(len(jobs), initializer=_init_pool, initargs=(lines, nbytes)) as pool:
        result = pool.map_async(_pool_work, jobs, chunksize=1)
        while not result.ready():
            result.wait(0.5)
            report.set(lines.value, nbytes.value)
        return result.get()


class _Reporter:
    def __init__(self, total_bytes, log, t0, every=2.0):
        self.total, self.log, self.t0, self.every = max(total_bytes, 1), log, t0, every
        self.lines = self.bytes = 0
        self.last = time.time()

    def add(self, lines, nbytes):
        self.set(self.lines + lines, self.bytes + nbytes)

    def set(self, lines, nbytes):
        self.lines, self.bytes = lines, nbytes
        now = time.time()
        if now - self.last >= self.every:
            self.last = now
            print(f"preprocess: {100 * self.bytes / self.total:5.1f}% of the corpus, {self.lines} lines, "
                  f"{self.lines / (now - self.t0):.0f} lines/s", file=self.log, flush=True)
