"""lm: causal language-model windows (GPT style), no masking."""
from tencentpretrain.data.processors.base import Processor
from tencentpretrain.errors import UserError
from tencentpretrain.registry import PROCESSORS


@PROCESSORS.register("lm")
class LmProcessor(Processor):
    """All lines streamed, each followed by [SEP], packed into windows of seq_length + 1 tokens (the
    loader feeds window[:-1] and predicts window[1:]); packing restarts at each block."""
    token_target = "lm"
    min_seq_length = 2

    @classmethod
    def check_options(cls, opts):
        if opts.whole_word_masking:
            raise UserError("--whole_word_masking applies to the mlm and bert processors; lm has no masking")

    def process_block(self, lines, start, end):
        n, buf = self.L + 1, []
        for _, _, text in lines:
            ids = self.encode(text)
            if ids:
                buf += ids + [self.sep]
            while len(buf) >= n:
                yield {"tokens": buf[:n]}
                del buf[:n]
        if len(buf) >= 2:
            yield {"tokens": buf}
