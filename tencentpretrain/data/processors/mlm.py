"""mlm: one document per line, masked-language-model instances (RoBERTa style, no sentence pairs)."""
import numpy as np

from tencentpretrain.data.processors.base import Processor, full_windows
from tencentpretrain.registry import PROCESSORS


@PROCESSORS.register("mlm")
class MlmProcessor(Processor):
    """Each line -> [CLS] tokens [SEP] instances of at most seq_length tokens (a long line is split).
    --full_sentences: the lines' tokens, each line followed by [SEP], are packed across line boundaries
    into [CLS] + (seq_length - 1) token instances; packing restarts at each block."""

    def process_block(self, lines, start, end):
        if self.opts.full_sentences:
            rng = np.random.default_rng([self.opts.seed, start])
            for window in self.pack(lines, self.L - 1):
                if any(t != self.sep for t in window):  # the last one may be empty or a lone [SEP]
                    yield from self.emit([self.cls] + window, rng)
            return
        n, buf = self.L - 2, []
        for line_start, piece, ids in self.encode_pieces(lines):
            if piece.start == line_start:  # each line's masks come from its own stream
                rng = np.random.default_rng([self.opts.seed, line_start]) if self.static else None
            windows, buf = full_windows(buf + ids, n)
            if piece.line_end and buf:
                windows.append(buf)
                buf = []
            for window in windows:
                yield from self.emit([self.cls] + window + [self.sep], rng)
