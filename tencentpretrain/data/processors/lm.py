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
        for window in self.pack(lines, self.L + 1):
            if len(window) >= 2:
                yield {"tokens": window}
