"""WID inside the training loop: one Callback plus a parameter-group claim (see training/callbacks.py).

    claims            the compactors get wid.compactor_learning_rate (and compactor_weight_decay);
                      the teacher's weights keep the run's --learning_rate (1e-6 in the recipe)
    after_backward    zero the task gradient of masked entries            (penalty.py)
    on_step_end       pull masked entries toward 0; every w_step, grow the masks and log them
    state_dict        the schedule position (the masks themselves are buffers in the model file)

Masks are computed from the parameters, which data-parallel training keeps identical, and are also
broadcast from rank 0, so every rank prunes the same coordinates.
"""
import json
import os
import warnings

import torch
import torch.distributed as dist

from tencentpretrain.training.callbacks import Callback
from tencentpretrain.training.optim import ParamGroupClaim
from tencentpretrain.wid import penalty, schedule
from tencentpretrain.wid.config import plan_geometry
from tencentpretrain.wid.groups import groups_of

COMPACTOR_SUFFIXES = ("compactor_in", "compactor_out")


def is_compactor(name, _param=None):
    return name.endswith(COMPACTOR_SUFFIXES)


class MaskLog:
    """JSON lines, one per group whose mask changed at an update:
    {"step": 2000, "group": "F.3", "size": 3072, "kept": 2880, "target": 768,
     "pruned": [all masked indices so far], "new": [indices masked at this step]}"""

    def __init__(self, path):
        self.path = path

    def append(self, records):
        if not self.path or not records:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        text = "".join(json.dumps(r) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:  # one write per update: whole lines or nothing
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step):
        """On resume: drop lines written after the checkpoint (the run will write them again)."""
        if not self.path or not os.path.isfile(self.path):
            return
        from tencentpretrain.utils.io import atomic_write
        with open(self.path, encoding="utf-8") as f:
            lines = [l for l in f if l.strip() and json.loads(l)["step"] <= step]
        with atomic_write(self.path, "w", encoding="utf-8") as f:
            f.writelines(lines)


class WidCallback(Callback):
    state_key = "wid"

    def __init__(self, model, log_path=None, total_steps=None):
        self.model, self.wid = model, model.cfg.wid
        self.geometry = plan_geometry(model.cfg)
        self.groups = groups_of(model)
        self.log = MaskLog(log_path)
        self.total_steps = total_steps
        self.last_update = 0  # optimizer step of the last mask update
        self.lr = self.wid.compactor_learning_rate
        self._compactor = next(p for n, p in model.named_parameters() if is_compactor(n))

    # ---- parameter groups ---------------------------------------------------------------------
    def claims(self):
        return [ParamGroupClaim("wid_compactor", is_compactor, lr=self.wid.compactor_learning_rate,
                                weight_decay=self.wid.compactor_weight_decay)]

    # ---- the hooks ----------------------------------------------------------------------------
    def on_train_begin(self, trainer):
        step = getattr(trainer, "step", 0)
        if self.total_steps is not None and self.total_steps < self.geometry.schedule_steps:
            warnings.warn(f"--total_steps {self.total_steps} ends before the WID schedule reaches the target "
                          f"widths at step {self.geometry.schedule_steps} (w_step {self.wid.w_step}); the "
                          f"merge will refuse the result. Raise --total_steps or lower --w_step.")
        if getattr(trainer, "env", None) is None or trainer.env.is_main:
            self.log.truncate_after(step)
        self._broadcast()

    def after_backward(self, trainer=None, optimizer=None):
        optimizer = optimizer or getattr(trainer, "optimizer", None)
        if optimizer is not None:  # the lr the coming step uses (the scheduler moves it after the step)
            self.lr = next((g["lr"] for g in optimizer.param_groups
                            if any(p is self._compactor for p in g["params"])), self.lr)
        penalty.mask_gradients(self.groups)

    def on_step_end(self, trainer, step):
        penalty.decay_masked(self.groups, self.lr * self.wid.l2_lambda, self.wid.zero_below)
        if schedule.is_update_step(step, self.wid, self.geometry):
            self.update_masks(step, main=getattr(trainer, "env", None) is None or trainer.env.is_main)

    # ---- masks --------------------------------------------------------------------------------
    @torch.no_grad()
    def update_masks(self, step, main=True):
        update = step // self.wid.w_step
        records = []
        for group in self.groups:
            count = schedule.masked_count(group, update, self.wid, self.geometry)
            keep = schedule.select(group, schedule.importance(group, self.wid.importance), count)
            new = (group.keep & ~keep).nonzero().flatten()
            if len(new) == 0:
                continue
            group.keep.copy_(keep)
            group.refresh()
            records.append({"step": step, "group": group.name, "size": group.size, "kept": group.n_kept,
                            "target": group.target, "pruned": (~keep).nonzero().flatten().tolist(),
                            "new": new.tolist()})
        self._broadcast()
        self.last_update = step
        if main:
            self.log.append(records)
        return records

    def _broadcast(self):
        if dist.is_available() and dist.is_initialized():
            for group in self.groups:
                dist.broadcast(group.keep, 0)
                dist.broadcast(group.decay, 0)
                group.refresh()

    def finished(self):
        return all(g.n_kept == g.target for g in self.groups)

    # ---- resume -------------------------------------------------------------------------------
    def state_dict(self):
        return {"last_update": self.last_update, "w_step": self.wid.w_step,
                "strategy": self.wid.strategy, "target_hidden_size": self.wid.target_hidden_size}

    def load_state_dict(self, state):
        for key in ("w_step", "strategy", "target_hidden_size"):
            if state.get(key) != getattr(self.wid, key):
                from tencentpretrain.errors import UserError
                raise UserError(f"the checkpoint was trained with wid.{key} = {state.get(key)!r}, this run "
                                f"asks for {getattr(self.wid, key)!r}; resume with the same WID settings")
        self.last_update = state["last_update"]
        for group in self.groups:  # the masks came with the model weights
            group.refresh()


def default_log_path(wid, output_model_path):
    if wid.mask_path:
        return wid.mask_path
    return f"{output_model_path}.masks.jsonl" if output_model_path else None


def build_wid_plugin(model, model_cfg, train_cfg=None, log_path=None):
    """The seam pretrain.py calls (training/plugins.py): returns ([callback], [claims])."""
    log_path = log_path or default_log_path(model_cfg.wid, getattr(train_cfg, "output_model_path", None))
    cb = WidCallback(model, log_path, getattr(train_cfg, "total_steps", None))
    return [cb], cb.claims()
