"""Atomic file writes: a crash mid-write leaves the previous file intact."""
import contextlib
import errno
import json
import os

from tencentpretrain.errors import is_write_failure


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Open `path + '.tmp'` for writing, fsync it, then rename it over `path`.

    On failure the temporary file is removed, and a failed write (full disk, read-only or forbidden
    folder; also torch's and numpy's errno-less write errors) is raised as an OSError naming `path`,
    so the CLI's error line says which file could not be written (errors.describe_os_error)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp"
    try:
        try:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, mode, **kwargs) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
    except (OSError, RuntimeError) as err:
        named = _naming(err, path)
        if named is None:
            raise
        raise named from err


def _naming(err, path):
    """`err` as an OSError whose filename is `path` (not its temporary name), or None to keep `err`."""
    if isinstance(err, OSError) and err.errno is not None:
        if err.filename in (None, f"{path}.tmp"):
            return OSError(err.errno, err.strerror, path)
        return None
    if is_write_failure(err):
        full = "No space left" in str(err) or "requested and" in str(err)
        return OSError(errno.ENOSPC if full else errno.EIO, f"write failed: {str(err).strip().splitlines()[0]}",
                       path)
    return None


def write_json(path, obj, ensure_ascii=True):
    """`obj` as indented JSON with a final newline, written atomically (see atomic_write)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=ensure_ascii)
        f.write("\n")
