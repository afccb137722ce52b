"""Corpus -> dataset file: options, checks, and the work spread over processes (preprocess.py's library side).

The corpus is cut into blocks of about `block_bytes` at line boundaries (document boundaries, i.e.
after a blank line, for processors that read documents); the cut points depend only on the file, never
on --processes_num. Each worker takes a contiguous run of blocks, streams their lines through the
processor (processors/) and appends instances to its own shard files; the shards are then concatenated
in order (dataset.assemble). Two rules, kept by the processors, make N processes write exactly what one
writes:
  - every random draw comes from a Generator seeded by (seed, byte offset of the document, copy)
    (or of the block, for the packing processors), never from a stream shared across documents;
  - packing across lines (mlm --full_sentences, lm) restarts at each block, so a worker needs no state
    from the blocks before its own.
Memory: one block's documents (bert; at most about 8 MiB of them, see processors/bert.py) or one
piece of a line (at most 1 MiB, see corpus.py) plus one pending instance (others), and one shard chunk
of instances: a bound that does not grow with the corpus or its longest line. Time is linear in the
corpus (token buffers are cut by index, processors/base.py).

Workers are plain processes that get everything they need as arguments (their job, the shared progress
counters, the queue for their result), so nothing lives in module globals.
"""
import hashlib
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

import numpy as np

from tencentpretrain.data.corpus import PIECE_BYTES, Corpus
from tencentpretrain.data.dataset import DatasetHeader, ShardWriter, assemble, position_dtype, token_dtype
from tencentpretrain.data.masking import MaskSpec, continuation_table
from tencentpretrain.errors import UserError
from tencentpretrain.registry import PROCESSORS
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.resources import default_vocab_path
from tencentpretrain.resources import resolve

SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask")


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
    piece_bytes: int = PIECE_BYTES  # longer lines are read in pieces (corpus.py); smaller in tests


def preprocess(opts, log=sys.stderr):
    """Preprocess `opts.corpus_path` into the dataset file `opts.dataset_path`; returns its header.
    Progress goes to `log` every few seconds, and a summary line at the end."""
    t0 = time.time()
    processor = _validate(opts)
    tokenizer = build_tokenizer_for(opts)
    corpus = Corpus(opts.corpus_path, opts.piece_bytes)
    header = _make_header(opts, processor, tokenizer, corpus)
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
            results = _run_workers(jobs, report)
        lines = sum(r["lines"] for r in results)
        if sum(r["instances"] for r in results) == 0:
            raise UserError(f"corpus {opts.corpus_path} yields no instance for the '{opts.data_processor}' "
                            f"processor ({lines} lines, all blank or without tokens); nothing written. Give a "
                            f"corpus with text in it{processor.corpus_format}")
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
    """The tokenizer `opts` names; UserError unless its vocabulary has the five special tokens."""
    tok = build_tokenizer(opts.tokenizer, vocab_path=opts.vocab_path, spm_model_path=opts.spm_model_path,
                          do_lower_case=opts.do_lower_case)
    ids = {role: getattr(tok, f"{role}_id", None) for role in SPECIAL_ROLES}
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
    """The processor class `opts` names, after checking the options; UserError on a bad one."""
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
    processor.check_options(opts)
    return processor


def _make_header(opts, processor, tok, corpus):
    vocab_file = opts.spm_model_path or opts.vocab_path
    if vocab_file is None:
        vocab_file = default_vocab_path()
    vocab_file = resolve(vocab_file)
    sha = None
    if os.path.isfile(vocab_file):
        with open(vocab_file, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
    return DatasetHeader(
        processor=opts.data_processor, seq_length=opts.seq_length, vocab_size=tok.vocab_size,
        special_ids={r: int(getattr(tok, f"{r}_id")) for r in SPECIAL_ROLES},
        dynamic_masking=not processor.static_masking(opts), token_dtype=token_dtype(tok.vocab_size),
        position_dtype=position_dtype(opts.seq_length), whole_word_masking=opts.whole_word_masking,
        full_sentences=opts.full_sentences, dup_factor=processor.copies(opts), seed=opts.seed,
        short_seq_prob=opts.short_seq_prob, tokenizer=opts.tokenizer, do_lower_case=opts.do_lower_case,
        vocab_path=os.path.abspath(vocab_file), vocab_sha256=sha,
        corpus={"path": os.path.abspath(opts.corpus_path), "bytes": corpus.size}, block_bytes=opts.block_bytes)


def _split(blocks, n, size):
    """Contiguous runs of blocks, about equal in bytes, one per process (fewer if few blocks)."""
    groups = [[] for _ in range(n)]
    for start, end in blocks:
        groups[min(n - 1, (start + end) * n // (2 * size))].append((start, end))
    return [g for g in groups if g]


# ---------------------------------------------------------------------------------------- workers


def _work(job, progress):
    """One worker: the instances of its blocks, in order, into its shard files.
    `progress(lines, bytes)` is called with increments as the blocks are read."""
    opts, header, blocks, prefix = job
    tok = build_tokenizer_for(opts)
    corpus = Corpus(opts.corpus_path, opts.piece_bytes)
    processor = PROCESSORS.get(opts.data_processor)(opts, tok, corpus, mask_spec_for(tok, opts.whole_word_masking))
    writer = ShardWriter(prefix, header)
    lines = 0
    for start, end in blocks:
        counter = _LineCounter(progress)
        for instance in processor.process_block(counter.count(corpus.lines(start, end)), start, end):
            writer.add(**instance)
        lines += counter.finish(end - start)
    return dict(writer.close(), lines=lines)


class _LineCounter:
    """Counts the lines of one block as the processor reads them (not its random look-ups elsewhere in
    the corpus) and reports them every 1000 lines."""

    def __init__(self, progress):
        self.progress, self.lines, self.reported = progress, 0, 0

    def count(self, pieces):
        for piece in pieces:
            if piece.line_end:
                self.lines += 1
                if self.lines - self.reported >= 1000:
                    self.progress(self.lines - self.reported, 0)
                    self.reported = self.lines
            yield piece

    def finish(self, nbytes):
        self.progress(self.lines - self.reported, nbytes)
        return self.lines


def _run_workers(jobs, report):
    """Run each job in its own process; results in job order. A worker's UserError is raised here, and
    the other workers are stopped."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    counters = (ctx.Value("q", 0), ctx.Value("q", 0))  # lines, bytes read by all workers
    results_queue = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(i, job, counters, results_queue), daemon=True)
             for i, job in enumerate(jobs)]
    results = [None] * len(jobs)
    try:
        for p in procs:
            p.start()
        pending = set(range(len(jobs)))
        while pending:
            report.set(counters[0].value, counters[1].value)
            try:
                i, error, result = results_queue.get(timeout=0.5)
            except queue.Empty:
                _check_alive(procs, pending)
                continue
            if error is not None:
                raise error
            results[i] = result
            pending.discard(i)
        report.set(counters[0].value, counters[1].value)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            if p.pid is not None:
                p.join()
    return results


def _worker_main(i, job, counters, results_queue):
    """Body of worker process i: run `job`, put (i, error or None, result or None) on the queue."""
    def progress(lines, nbytes):
        for value, n in zip(counters, (lines, nbytes)):
            with value.get_lock():
                value.value += n
    try:
        results_queue.put((i, None, _work(job, progress)))
    except UserError as err:
        results_queue.put((i, err, None))
    except Exception:  # a bug: send its traceback, as the parent's would not show where it happened
        results_queue.put((i, RuntimeError(f"preprocessing worker {i} failed:\n{traceback.format_exc()}"), None))


def _check_alive(procs, pending):
    """UserError if a worker that owes a result has died (killed, e.g. out of memory)."""
    for i in sorted(pending):
        code = procs[i].exitcode
        if code is not None and code != 0:
            raise UserError(f"preprocessing worker {i} died (exit code {code}; killed for lack of memory?); "
                            "re-run with fewer --processes_num")


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
