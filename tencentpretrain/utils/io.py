"""Atomic file writes: a crash mid-write leaves the previous file intact."""
import contextlib
import json
import os


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """Open `path + '.tmp'` for writing, fsync it, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path, obj, ensure_ascii=True):
    """`obj` as indented JSON with a final newline, written atomically (see atomic_write)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=ensure_ascii)
        f.write("\n")
