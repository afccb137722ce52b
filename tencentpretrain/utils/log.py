"""Progress lines and notes through Python `logging`, with TencentPretrain's flags.

By default the terminal shows exactly what `print` would: the bare message on stdout. `--log_path`
adds a file that receives the same records with a timestamp and level; `--log_level` and
`--log_file_level` filter the terminal and the file (ERROR < INFO < DEBUG < NOTSET, as in TencentPretrain).
Everything goes through one logger, "tencentpretrain"; `info` has print's call shape, so it can be
passed wherever a `log=print` callable is expected.
"""
import contextlib
import logging
import os
import sys

from tencentpretrain.errors import UserError

LEVELS = ("ERROR", "INFO", "DEBUG", "NOTSET")
FILE_FORMAT = "[%(asctime)s %(levelname)s] %(message)s"
LOGGER = logging.getLogger("tencentpretrain")


class _Stdout(logging.StreamHandler):
    """A handler on whatever `sys.stdout` is when a record arrives (a redirect, pytest's capture)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns one; the property ignores it
        pass


def setup_logging(log_path=None, log_level="INFO", log_file_level="INFO", quiet=False):
    """(Re)configure the logger: the terminal at `log_level`, and `log_path` (appended to) at
    `log_file_level`. `quiet` is for the other ranks of a distributed run: only warnings and errors
    reach their terminal, and they write no file."""
    for level in (log_level, log_file_level):
        if level not in LEVELS:
            raise ValueError(f"log level {level!r}: choose one of {', '.join(LEVELS)}")
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
        handler.close()
    console = _Stdout()
    console.setLevel(logging.WARNING if quiet else log_level)
    LOGGER.addHandler(console)
    if log_path and not quiet:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        to_file = logging.FileHandler(log_path, encoding="utf-8")
        to_file.setLevel(log_file_level)
        to_file.setFormatter(logging.Formatter(FILE_FORMAT))
        LOGGER.addHandler(to_file)
    LOGGER.setLevel(1)  # the handlers filter; NOTSET here would defer to the root logger's WARNING
    LOGGER.propagate = False


def check_log_path(path):
    """Fail early, naming the flag, when --log_path cannot be appended to (makes its folder)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as err:
        raise UserError(f"--log_path {path}: cannot write to it ({err.strerror}); give a writable file path") from None


@contextlib.contextmanager
def logging_to(log_path=None, log_level="INFO", log_file_level="INFO", quiet=False):
    """`setup_logging` for the duration of a block, then back to the default (closing the file)."""
    setup_logging(log_path, log_level, log_file_level, quiet)
    try:
        yield LOGGER
    finally:
        setup_logging()


def info(*parts, sep=" ", **_print_kwargs):
    """`print`-shaped: `info(msg, flush=True)` logs `msg` at INFO (handlers flush every record)."""
    LOGGER.info(sep.join(str(p) for p in parts))


setup_logging()  # the default: like print
