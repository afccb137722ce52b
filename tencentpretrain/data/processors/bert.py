"""bert: sentence pairs with a next-sentence label, masked (Google's create_pretraining_data)."""
import numpy as np

from tencentpretrain.data.processors.base import Processor, is_blank_line
from tencentpretrain.errors import UserError
from tencentpretrain.registry import PROCESSORS

GROUP_BYTES = 8 << 20  # documents held (tokenized) at once: those of one block, or of 8 MiB of it
DOC_BYTES = 4 << 20    # a longer document is cut in parts, each a document


@PROCESSORS.register("bert")
class BertProcessor(Processor):
    """Documents separated by blank lines, one sentence per line: sentences are gathered up to a target
    length (seq_length - 3, or with probability short_seq_prob a random shorter one), split at a random
    point into A and B; half the time B is replaced by sentences from another document
    (is_random_next = 1) and the unused sentences go back to the pool. Pairs are truncated
    longest-first (from the front or the back at random). [CLS] A [SEP] B [SEP], segments 1/2.
    The random document is drawn, as in TencentPretrain's per-worker document buffer, from the other
    documents of the same block (about block_bytes of text, held tokenized in memory; a block of more
    than GROUP_BYTES is taken in groups of documents, a document of more than DOC_BYTES in parts); a
    block (or group) of one document draws from a random byte of the whole corpus instead. A line
    longer than 1 MiB is read in pieces (corpus.py), each a sentence.
    --dup_factor copies of each document's pairs (different splits, pairings and, under static masking,
    masks) are written even with --dynamic_masking, as TencentPretrain does."""
    instance_arrays = {"seg_split": "int32", "is_random_next": "uint8"}
    labels = {"sp": "is_random_next"}
    by_document = True
    min_seq_length = 5
    corpus_format = " (documents separated by blank lines, one sentence per line)"

    @classmethod
    def check_options(cls, opts):
        if opts.full_sentences:
            raise UserError("--full_sentences packs lines for the mlm processor; bert builds sentence pairs")

    @classmethod
    def copies(cls, opts):
        return opts.dup_factor  # different pairs per copy, masked or not

    def process_block(self, lines, start, end):
        for docs in self._groups(lines, end):
            for k in range(len(docs)):
                for copy in range(self.n_copies):
                    rng = np.random.default_rng([self.opts.seed, docs[k][1], copy])
                    yield from self._pairs(docs, k, rng)

    def _groups(self, lines, end):
        """The block's documents, (sentences as int32 arrays, first byte, end byte), in groups that end
        at the first document end after GROUP_BYTES of corpus; a document is cut after the sentence that
        takes it past DOC_BYTES. Both bound memory; a corpus with smaller blocks is read as one group."""
        docs, doc = [], []

        def close(doc_end):
            docs.append((doc, doc_start, doc_end))
            return docs[-1][2] - docs[0][1] >= GROUP_BYTES

        for line_start, piece, ids in self.encode_pieces(lines):
            if is_blank_line(line_start, piece):
                if doc:
                    if close(piece.start):
                        yield docs
                        docs = []
                doc = []
            elif ids:
                if not doc:
                    doc_start = piece.start
                doc.append(np.asarray(ids, dtype=np.int32))
                if piece.end - doc_start >= DOC_BYTES:
                    if close(piece.end):
                        yield docs
                        docs = []
                    doc = []
        if doc:
            close(end)
        if docs:
            yield docs

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
                if len(a) and len(b):
                    tokens = np.concatenate(([self.cls], a, [self.sep], b, [self.sep]))
                    yield from self.emit(tokens, rng, copies=1,
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
            pieces = self.corpus.lines_after(int(rng.integers(0, self.corpus.size)))
            for line_start, piece, ids in self.encode_pieces(pieces):
                if attempt < 9 and doc_start <= piece.start < doc_end:
                    break
                if is_blank_line(line_start, piece):
                    if out:
                        break  # end of that document
                    continue
                if ids:
                    out.append(ids)
                    n += len(ids)
                    if n >= target:
                        break
            if out:
                return _flatten(out)
        return None


def _flatten(sentences):
    return np.concatenate(sentences) if sentences else np.zeros(0, dtype=np.int32)


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
