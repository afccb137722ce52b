"""What a resume does with options that differ from the ones its checkpoint was trained with.

Every option has a policy (the resume table of docs/pretraining.md is this file):

  refuse   continuing would not be the run the checkpoint belongs to (another batch, data order,
           model, precision, optimizer): the resume stops with every such option's old and new value
  apply    the option may change between two legs of a run: the new value is used and printed

Nothing is ignored: an option missing from the tables is refused, and one the checkpoint does not
record (written by an older version) is named in a note. A feature declares which keys of its config
block may change in `Feature.resume_may_change` (key -> what the change does); every other key is
refused like the model config's own fields.
"""
import hashlib
import os
from dataclasses import asdict, dataclass

from tencentpretrain import features
from tencentpretrain.errors import UserError

REFUSE, APPLY = "refuse", "apply"
_SCHEDULE = "the learning-rate schedule is recomputed as a fresh run with the new options would have it " \
            "and continues from the checkpoint's step"

# TrainConfig fields.
TRAIN_OPTIONS = {
    "total_steps": (APPLY, _SCHEDULE + " (warmup and decay span the new total)"),
    "learning_rate": (APPLY, "the schedule continues with the new peak learning rate"),
    "warmup": (APPLY, _SCHEDULE),
    "weight_decay": (APPLY, "used from the next step on"),
    "max_grad_norm": (APPLY, "used from the next step on"),
    "report_steps": (APPLY, "report lines at the new interval"),
    "save_checkpoint_steps": (APPLY, "checkpoints at the new interval"),
    "output_model_path": (APPLY, "checkpoints go to the new path"),
    "tensorboard_dir": (APPLY, "the event log goes to the new folder"),
    "zero_optimizer": (APPLY, "checkpoints hold the full optimizer state either way; sharding only changes "
                              "where it is kept between saves"),
    "accumulation_steps": (REFUSE, "it changes what one step trains on and the data position"),
    "seed": (REFUSE, "the random states come from the checkpoint, so a new seed would be ignored"),
    "scheduler": (REFUSE, "the schedule's shape would change in mid-run"),
    "optimizer": (REFUSE, "the optimizer state belongs to the old optimizer"),
    "bias_correction": (REFUSE, "the optimizer state belongs to the old update rule"),
    "betas": (REFUSE, "the optimizer state belongs to the old update rule"),
    "eps": (REFUSE, "the optimizer state belongs to the old update rule"),
    "precision": (REFUSE, "the loss scaler state and numerics belong to the old precision"),
}
# Options pretrain.py records beside the TrainConfig (Trainer's `run_info`).
RUN_OPTIONS = {
    "batch_size": (REFUSE, "it changes what one step trains on and the data position"),
    "dataset": (REFUSE, "the data position belongs to the old dataset"),
    "log_path": (APPLY, "messages go to the new log file"),
    "log_level": (APPLY, "the terminal shows the new level"),
    "log_file_level": (APPLY, "the log file gets the new level"),
}
WORLD_SIZE_WHY = "each process's data shard and random state belong to the old number of processes"
MODEL_WHY = "the checkpoint's weights and optimizer state belong to the old model"
FLAG_NAMES = {"precision": "precision (--bf16/--fp16)", "dataset": "--dataset_path (contents)",
              "world_size": "processes (--world_size/torchrun)"}


@dataclass
class Change:
    name: str   # as the user knows it: --batch_size, dropout (model config), wid.l2_lambda (model config)
    old: object
    new: object
    why: str

    def line(self):
        return f"{self.name}: {_show(self.old)} in the checkpoint, {_show(self.new)} now ({self.why})"


class ResumeRefused(UserError):
    same_on_all_ranks = True  # every rank compares the same files and options


def _show(value):
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict) and "path" in value:  # a dataset fingerprint
        return f"{value['path']} ({value.get('size', '?')} bytes, sha256 of its ends {value.get('sha256', '?')[:12]})"
    return repr(value) if isinstance(value, str) else str(value)


def dataset_fingerprint(path, span=1 << 20):
    """Path, size and the SHA-256 of the first and last `span` bytes: cheap at any size, and it changes
    when the dataset is rebuilt (header, instance count, shuffled order)."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return {"path": os.path.abspath(path), "size": size, "sha256": h.hexdigest()}


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _flat(config):
    """A model config dict with feature blocks as `block.key`."""
    out = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": _plain(v) for k, v in value.items()})
        else:
            out[key] = _plain(value)
    return out


def _model_policy(key):
    block, _, sub = key.partition(".")
    if sub and block in features.FEATURES:
        why = features.get(block).resume_may_change.get(sub)
        if why:
            return APPLY, why
    return REFUSE, MODEL_WHY


def compare(state, train_cfg, run_info, world_size):
    """(refused, applied, notes) for resuming `state` (a training-state dict) with these options."""
    refused, applied, notes = [], [], []

    def judge(name, old, new, policy):
        if old != new:
            (refused if policy[0] == REFUSE else applied).append(Change(name, old, new, policy[1]))

    if state.get("world_size") != world_size:
        refused.append(Change(FLAG_NAMES["world_size"], state.get("world_size"), world_size, WORLD_SIZE_WHY))
    saved = state.get("train_config", {})
    for name, new in asdict(train_cfg).items():
        if name in saved:
            judge(FLAG_NAMES.get(name, f"--{name}"), _plain(saved[name]), _plain(new),
                  TRAIN_OPTIONS.get(name, (REFUSE, "no rule says it may change")))
    if saved and train_cfg.total_steps < state["step"]:
        refused.append(Change("--total_steps", saved.get("total_steps"), train_cfg.total_steps,
                              f"the checkpoint is already at step {state['step']}"))
    saved_run, run_info = state.get("run", {}), dict(run_info or {})
    new_model = _flat(run_info.pop("model_config", None))
    old_model = _flat(saved_run.get("model_config"))
    dataset, old_dataset = run_info.pop("dataset", None), saved_run.get("dataset")
    if dataset and old_dataset:
        if (old_dataset["size"], old_dataset["sha256"]) != (dataset["size"], dataset["sha256"]):
            refused.append(Change(FLAG_NAMES["dataset"], old_dataset, dataset, RUN_OPTIONS["dataset"][1]))
        elif old_dataset["path"] != dataset["path"]:
            applied.append(Change("--dataset_path", old_dataset["path"], dataset["path"],
                                  "the same contents at a new path"))
    for name, new in run_info.items():
        if name in saved_run:
            judge(f"--{name}", saved_run[name], new, RUN_OPTIONS.get(name, (REFUSE, "no rule says it may change")))
    if new_model and old_model:
        for key in sorted(set(old_model) | set(new_model)):
            judge(f"{key} (model config)", old_model.get(key), new_model.get(key), _model_policy(key))
    unrecorded = [what for what, there in (("the model config", old_model or not new_model),
                                           ("the dataset", old_dataset or not dataset),
                                           ("--batch_size", "batch_size" in saved_run or "batch_size" not in run_info),
                                           ("the training options", saved)) if not there]
    if unrecorded:
        notes.append(f"note: the checkpoint does not record {', '.join(unrecorded)} (an older version wrote it); "
                     f"they are not compared with this run's")
    return refused, applied, notes


def check(state, model_path, train_cfg, run_info, world_size):
    """Raise ResumeRefused listing every refused change; return (applied changes, notes)."""
    refused, applied, notes = compare(state, train_cfg, run_info, world_size)
    if refused:
        lines = "\n  ".join(change.line() for change in refused)
        raise ResumeRefused(
            f"cannot resume {model_path} with these options; they differ from the ones it was trained with:\n"
            f"  {lines}\nResume with the checkpoint's values, or start a new run: another --output_model_path, "
            f"with --pretrained_model_path {model_path} to start from its weights.")
    return applied, notes


def reschedules(applied):
    """True if an applied change moves the learning rate of the coming steps."""
    return any(c.name in ("--total_steps", "--learning_rate", "--warmup") or "learning_rate" in c.name
               for c in applied)
