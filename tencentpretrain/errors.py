"""User-facing errors and the wrapper every CLI runs under.

`run_cli` turns three kinds of failure into one `error: ...` line and exit status 2 instead of a
traceback: a UserError (bad input), and the environment refusing a file operation: a full disk, a
read-only file system, missing permissions, a folder where a file was expected (OSError with those
errnos, numpy's short-write OSError, and torch's "enforce fail at inline_container" / "file write
failed" RuntimeError, which carry no errno).
"""
import errno
import re
import sys


class UserError(ValueError):
    """Bad input from the user: the message says what, where, and what to do."""


# errno -> (what happened, what to do)
_ENVIRONMENT = {
    errno.ENOSPC: ("no space left on the disk", "free space on that disk or write to another one"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or write somewhere else"),
    errno.EFBIG: ("file too large for this file system", "write to another file system"),
    errno.EROFS: ("read-only file system", "choose a path on a writable disk"),
    errno.EACCES: ("permission denied", "check the permissions of the file and its folder, or choose another path"),
    errno.EPERM: ("operation not permitted", "check the permissions of the file and its folder, or choose "
                                             "another path"),
    errno.EISDIR: ("is a folder, not a file", "give a file path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "fix the path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.EIO: ("input/output error (the disk or the network file system failed)", "check the disk, then retry"),
}
# Failures of torch.save / numpy's tofile that carry no errno; all of them mean "the write did not finish".
_WRITE_FAILED = re.compile(r"enforce fail at inline_container|file write failed|No space left on device|"
                           r"\d+ requested and \d+ written")


def is_write_failure(err):
    """True for an exception that says a write could not finish (see _WRITE_FAILED); errno-less."""
    return isinstance(err, (OSError, RuntimeError)) and bool(_WRITE_FAILED.search(str(err)))


def describe_os_error(err, with_file=True):
    """One line for an environment failure (see the module docstring), or None for anything else.
    `with_file=False` leaves out the file name (when the caller names the file itself)."""
    if isinstance(err, OSError) and err.errno in _ENVIRONMENT:
        what, todo = _ENVIRONMENT[err.errno]
        where = f"{err.filename}: " if err.filename and with_file else ""
        also = f" (and {err.filename2})" if getattr(err, "filename2", None) and with_file else ""
        return f"{where}{what}{also}; {todo}"
    if is_write_failure(err):
        full = "No space left" in str(err) or "requested and" in str(err)
        cause = "no space left on the disk" if full else "the write did not finish (usually a full disk)"
        return (f"{cause} ({str(err).strip().splitlines()[0][:160]}); free space on that disk or write to "
                f"another one")
    return None


def run_cli(main, argv=None):
    """Run `main(argv)`; a UserError or an environment failure (describe_os_error) becomes
    `error: ...` on stderr and exit status 2."""
    try:
        result = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (OSError, RuntimeError) as err:
        line = describe_os_error(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(result or 0)
