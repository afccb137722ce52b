"""A training run's output path: checked before training, one writer at a time, no stale temporaries.

    check_output_path(path)        a file path in a writable folder (made if missing), not a folder
    OutputLock(path)               `<path>.lock`: this run is the only writer; a second run is refused
    remove_stale_partials(path)    temporaries of a save that a killed run left (checkpoint.stale_partials)
    check_free_space(path, ...)    refuse when not even one checkpoint pair fits, warn when the run's don't

The lock file holds the owner's pid, host name and start time. It is created with O_EXCL (atomic on
local file systems and NFSv3+), removed when the run ends, also on an error; a lock whose process is
gone (killed; same host only, where the pid can be checked) is taken over with a note. A lock from
another host is never taken over: delete it by hand when that run is known to be gone.
"""
import contextlib
import json
import os
import shutil
import socket
import time
import uuid

from tencentpretrain.errors import UserError
from tencentpretrain.training import checkpoint as ckpt
from tencentpretrain.utils.log import info

LOCK_SUFFIX = ".lock"
UNREADABLE_LOCK_GRACE_S = 30  # an empty lock younger than this may be one being written right now


def check_output_path(path, flag="--output_model_path"):
    """Refuse, before any training, an output that cannot be written: a folder, a path under a file,
    a folder that cannot be made or written to. Makes the folder when missing."""
    if not path or path.endswith(("/", os.sep)):
        raise UserError(f"{flag} {path!r}: give a file path, e.g. runs/model.bin")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path}: is an existing folder; give a file path, e.g. "
                        f"{os.path.join(path, 'model.bin')}")
    folder = os.path.dirname(os.path.abspath(path))
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"{flag} {path}: {probe} is a file, not a folder; fix the path")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot make the folder {folder} ({err.strerror}); choose a writable "
                        f"location") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {folder} is not writable; choose a writable location or "
                        f"fix its permissions")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class OutputLock:
    """`with OutputLock(output_model_path):` the run's claim on its output (see the module docstring)."""

    def __init__(self, output_model_path, log=info):
        self.path = output_model_path + LOCK_SUFFIX
        self.log = log
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "token": uuid.uuid4().hex}
        self.held = False

    def acquire(self):
        for _ in range(3):  # a stale lock is removed, then the O_EXCL create is tried again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._refuse_or_clear(self._read())
                continue
            except OSError as err:
                raise UserError(f"cannot create the lock file {self.path} ({err.strerror}); the output folder "
                                f"must be writable") from None
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self.held = self._read() == self.owner  # a racing take-over could have replaced it
            if self.held:
                return self
        raise UserError(f"{self.path}: another run keeps taking the lock on this output; start one run at a time")

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _refuse_or_clear(self, holder):
        if holder is None:  # released in the meantime
            return
        if not holder or not isinstance(holder.get("pid"), int):
            age = time.time() - os.path.getmtime(self.path) if os.path.exists(self.path) else 0
            if age < UNREADABLE_LOCK_GRACE_S:
                raise UserError(f"{self.path}: another run is starting on this output; start one run at a time")
            return self._clear(holder, f"an unreadable lock {self.path} ({age:.0f}s old)")
        who = f"pid {holder['pid']} on {holder.get('host')}, started {holder.get('started')}"
        if holder.get("host") == self.owner["host"] and not _pid_alive(holder["pid"]):
            return self._clear(holder, f"the lock {self.path} of a run that is gone ({who})")
        raise UserError(f"{self.path}: another run is writing to this output ({who}); wait for it to end or "
                        f"choose another --output_model_path. If that run is known to be gone, delete {self.path}")

    def _clear(self, holder, what):
        if self._read() != holder:  # another starting run took it over first: try again from the top
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        self.log(f"note: took over {what}", flush=True)

    def release(self):
        if self.held and self._read() == self.owner:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def remove_stale_partials(output_model_path, log=info):
    """Delete what a save killed half-way left (hold the lock first: a live writer's look the same)."""
    stale = ckpt.stale_partials(output_model_path)
    if not stale:
        return []
    size = sum(os.path.getsize(p) for p in stale if os.path.isfile(p))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    log(f"note: removed {len(stale)} temporary file(s) of an interrupted save ({size / 1e6:.1f} MB): "
        f"{', '.join(os.path.basename(p) for p in stale)}", flush=True)
    return stale


def checkpoint_pair_bytes(n_params):
    """A pair's size: fp32 weights in the model file, AdamW's two moments in the state file, and slack."""
    return 3 * 4 * n_params + (1 << 20)


def check_free_space(output_model_path, n_params, saves, log=info):
    """Refuse when the output's disk cannot hold one checkpoint pair; warn when it cannot hold the
    `saves` pairs this run may write (every pair is kept)."""
    pair = checkpoint_pair_bytes(n_params)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(output_model_path))).free
    gb = 1e9
    if free < pair:
        raise UserError(f"--output_model_path {output_model_path}: {free / gb:.2f} GB free on its disk, but one "
                        f"checkpoint pair needs about {pair / gb:.2f} GB; free space or write to another disk")
    if free < pair * saves:
        log(f"warning: {free / gb:.2f} GB free on the disk of {output_model_path}; the {saves} checkpoint pairs "
            f"this run may write need about {pair * saves / gb:.2f} GB (each about {pair / gb:.2f} GB). Free "
            f"space, raise --save_checkpoint_steps, or delete old pairs while it runs", flush=True)
