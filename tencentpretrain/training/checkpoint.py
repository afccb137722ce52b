"""Checkpoint pairs: a model file and a training-state file beside it.

    <output_model_path>-<step>            plain state_dict, TencentPretrain key names (model_io)
    <output_model_path>-<step>.state.pt   everything else needed to resume, see `training_state`
    <output_model_path>, <...>.state.pt   symbolic links to the last step's pair (no extra disk)

As in TencentPretrain, a pair is written at every multiple of --save_checkpoint_steps; here also at the
last step when --total_steps is not such a multiple, so the end of a run is never lost.
Both files of a pair are first written completely to temporary names and then renamed into place, so
a crash while writing (the long part) leaves the previous pair intact; the state file records the
model file's SHA-256, so a pair torn between the two renames is detected on resume. Files are never
rewritten in place (a rename replaces a link, it does not write through it).
The state file holds only tensors, numbers, strings, lists and dicts: `torch.load(weights_only=True)`
reads it.

Resuming the latest pair (`find_resumable`) skips a damaged newest pair (unreadable state, model hash
mismatch) with a note and takes the newest intact one. Temporary files a killed save left behind
(`*.partial*`, `stale_partials`) are removed when a run on the same output starts (training/outputs.py).
"""
import glob
import hashlib
import os
import random
import re
import shutil

import numpy as np
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.model_io import save_state_dict
from tencentpretrain.utils.io import atomic_write

STATE_SUFFIX = ".state.pt"
FORMAT = 1


def state_path(model_path):
    return model_path + STATE_SUFFIX


def step_path(output_model_path, step):
    return f"{output_model_path}-{step}"  # TencentPretrain's convention


def _partial(path):
    # Keep a `.safetensors` ending so model_io picks the same format for the temporary file.
    root, ext = (path[:-12], ".safetensors") if path.endswith(".safetensors") else (path, "")
    return f"{root}.partial{ext}"


def _unpartial(name):
    """The name `name` is a temporary of (the inverse of `_partial`, also after atomic_write's `.tmp`)."""
    name = name[:-4] if name.endswith(".tmp") else name
    if name.endswith(".partial"):
        return name[:-8]
    if name.endswith(".partial.safetensors"):
        return name[:-20] + ".safetensors"
    return None


def stale_partials(output_model_path):
    """Temporary files of this output's checkpoint pairs and final links (left by a process killed
    while saving), sorted. Only call it while holding the output's lock (outputs.OutputLock): a
    running writer's temporaries look the same."""
    directory = os.path.dirname(os.path.abspath(output_model_path))
    if not os.path.isdir(directory):
        return []
    ours = re.compile(re.escape(os.path.basename(output_model_path)) + r"(-\d+)?(\.state\.pt)?")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if ".partial" in name and ours.fullmatch(_unpartial(name) or ""))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(model_path, model_state, train_state):
    """Write the pair (model_path, model_path + STATE_SUFFIX)."""
    tmp_model, tmp_state = _partial(model_path), _partial(state_path(model_path))
    try:
        save_state_dict(model_state, tmp_model)
        train_state = dict(train_state, model_sha256=sha256_file(tmp_model),
                           model_file=os.path.basename(model_path))
        with atomic_write(tmp_state, "wb") as f:
            torch.save(train_state, f)
        os.replace(tmp_model, model_path)
        os.replace(tmp_state, state_path(model_path))
    finally:
        for tmp in (tmp_model, tmp_state):
            if os.path.exists(tmp):
                os.remove(tmp)


def link_final(src, dst):
    """Make `dst` (and its state file) a relative symbolic link to the pair `src`, or a copy where the
    file system has no links. Each name appears atomically (made under a temporary name, then renamed).

    Why not a hard link: two names of one file make `mv <out>-<step> <out>` (TencentPretrain's README)
    fail with "are the same file"; over a symbolic link it simply replaces the link.
    """
    for source, target in ((src, dst), (state_path(src), state_path(dst))):
        if os.path.realpath(source) == os.path.realpath(target):
            continue  # already the same file (the final pair resumed and re-linked)
        tmp = _partial(target)
        if os.path.lexists(tmp):
            os.remove(tmp)
        try:
            try:
                os.symlink(os.path.relpath(os.path.realpath(source), os.path.dirname(os.path.abspath(target))),
                           tmp)
            except (OSError, NotImplementedError):  # e.g. Windows without the symlink privilege
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)


def load_training_state(model_path):
    path = state_path(model_path)
    if not os.path.isfile(model_path):
        raise UserError(f"--resume_from {model_path}: model file not found")
    if not os.path.isfile(path):
        raise UserError(f"--resume_from {model_path}: its training-state file {path} is missing, so the "
                        f"run cannot be resumed exactly; to start a new run from these weights use "
                        f"--pretrained_model_path {model_path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path}: cannot read the training state ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a training-state file of format {FORMAT}")
    if state["model_sha256"] != sha256_file(model_path):
        raise UserError(f"{model_path} and {path} do not belong together (the model file changed after "
                        f"the state was written); resume from an earlier checkpoint")
    return state


def saved_step(model_path):
    """The step a checkpoint pair was written at (reads only that field: the file is memory-mapped)."""
    return int(torch.load(state_path(model_path), map_location="cpu", weights_only=True, mmap=True)["step"])


def _candidates(output_model_path):
    """Pairs among `<output_model_path>-<step>` and the final `<output_model_path>` whose state file
    exists, most advanced first. At equal steps the `-<step>` name comes first: the final pair is
    normally a link to it, so the two are the same checkpoint, not a conflict. A final pair whose
    state cannot be read sorts last (its step is unknown)."""
    pattern = re.compile(re.escape(output_model_path) + r"-(\d+)$")
    candidates = []
    for path in glob.glob(glob.escape(output_model_path) + "-*"):
        m = pattern.match(path)
        if m and os.path.isfile(state_path(path)):
            candidates.append((int(m.group(1)), 1, path))
    if os.path.isfile(output_model_path) and os.path.isfile(state_path(output_model_path)):
        try:
            step = saved_step(output_model_path)
        except Exception:  # unreadable: find_resumable says why when it gets there
            step = -1
        candidates.append((step, 0, output_model_path))
    return [path for *_, path in sorted(candidates, reverse=True)]


def find_latest(output_model_path):
    """The most advanced pair (see _candidates), or None. Does not check that it is intact."""
    candidates = _candidates(output_model_path)
    return candidates[0] if candidates else None


def find_resumable(output_model_path, log=print):
    """(path, training state) of the most advanced intact pair, or (None, None) when there is none.
    A damaged pair (unreadable or foreign state file, model file changed after the state was written)
    is skipped with a note through `log`, so a save torn by a crash costs one interval, not the run."""
    skipped = []
    for path in _candidates(output_model_path):
        try:
            state = load_training_state(path)
        except UserError as err:
            log(f"note: --resume skips {path}: {err}", flush=True)
            skipped.append(path)
            continue
        if skipped:
            log(f"note: --resume falls back to {path} (step {state['step']}), the newest intact checkpoint",
                flush=True)
        return path, state
    if skipped:
        raise UserError(f"--resume: no intact checkpoint of {output_model_path} (skipped {', '.join(skipped)}); "
                        f"delete or move the damaged files to start from step 0, or use --pretrained_model_path "
                        f"with a model file to keep its weights")
    return None, None


# ---- RNG state as plain values (torch.load(weights_only=True) refuses pickled objects) ----------

def rng_state():
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

