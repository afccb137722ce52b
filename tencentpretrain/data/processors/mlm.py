"""mlm: one document per line, masked-language-model instances (RoBERTa style, no sentence pairs)."""
import numpy as np

from tencentpretrain.data.processors.base import Processor
from tencentpretrain.registry import PROCESSORS


@PROCESSORS.register("mlm")
class MlmProcessor(Processor):
    """Each line -> [CLS] tokens [SEP] instances of at most seq_length tokens (a long line is split).
    --full_sentences: the lines' tokens, each line followed by [SEP], are packed across line boundaries
    into [CLS] + (seq_length - 1) token instances; packing restarts at each block."""

    def process_block(self, lines, start, end):
        if self.opts.full_sentences:
            yield from self._packed(lines, start)
            return
        n = self.L - 2
        for pos, _, text in lines:
            ids = self.encode(text)
            rng = np.random.default_rng([self.opts.seed, pos]) if ids and self.static else None
            for s in range(0, len(ids), n):
                yield from self.emit([self.cls] + ids[s:s + n] + [self.sep], rng)

    def _packed(self, lines, start):
        rng = np.random.default_rng([self.opts.seed, start])
        n, buf = self.L - 1, []
        for _, _, text in lines:
            ids = self.encode(text)
            if ids:
                buf += ids + [self.sep]
            while len(buf) >= n:
                yield from self.emit([self.cls] + buf[:n], rng)
                del buf[:n]
        if any(t != self.sep for t in buf):
            yield from self.emit([self.cls] + buf, rng)
