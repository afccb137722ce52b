"""The optional TensorBoard event log (`--tensorboard_dir`): the trainer's scalars at every report step.

TensorBoard is an optional package; without it the run goes on and says once that nothing is written.
"""
from tencentpretrain.utils.log import info

MISSING_NOTE = ("note: --tensorboard_dir needs the optional package 'tensorboard' (pip install tensorboard); "
                "no event log written")


class EventLog:
    """Scalars (tag -> number) into TensorBoard event files under `directory` (created if needed)."""

    def __init__(self, directory, log=info):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the `tensorboard` package is absent
            log(MISSING_NOTE, flush=True)
            return
        self.writer = SummaryWriter(log_dir=directory)

    def write(self, step, scalars):
        if self.writer is None:
            return
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()  # a report step is rare enough; the file is readable while training runs

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
