"""WID inside the training loop: one Callback plus a parameter-group claim (see training/callbacks.py).

    claims            the compactors get wid.compactor_learning_rate (and compactor_weight_decay);
                      the teacher's weights keep the run's --learning_rate (1e-6 in the recipe)
    on_train_begin    warn when --total_steps leaves too few steps to reach the targets, or to let
                      the last masked entries decay to dead (decay.py)
    after_backward    zero the task gradient of masked entries            (penalty.py);
                      before the first mask update, add wid.pre_mask_l2 * w to the compactors' gradients
    on_step_end       pull masked entries toward 0; every w_step, grow the masks and log them
    scalars           the kept widths, for the TensorBoard event log (wid/hidden_size, ...)
    state_dict        the schedule position and the compactors' lr (the masks are buffers in the model file)

Masks are computed from the parameters, which data-parallel training keeps identical, and are also
broadcast from rank 0, so every rank prunes the same coordinates.
"""
import json
import os
import warnings

import torch
import torch.distributed as dist

from tencentpretrain.errors import UserError
from tencentpretrain.training.callbacks import Callback
from tencentpretrain.training.optim import ParamGroupClaim, lr_factor
from tencentpretrain.utils.io import atomic_write
from tencentpretrain.utils.log import info
from tencentpretrain.wid import decay, penalty, schedule
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
        self._compactors = [p for n, p in model.named_parameters() if is_compactor(n)]
        self._compactor = self._compactors[0]

    # ---- parameter groups ---------------------------------------------------------------------
    def claims(self):
        return [ParamGroupClaim("wid_compactor", is_compactor, lr=self.wid.compactor_learning_rate,
                                weight_decay=self.wid.compactor_weight_decay)]

    # ---- the hooks ----------------------------------------------------------------------------
    def on_train_begin(self, trainer):
        step = getattr(trainer, "step", 0)
        if getattr(trainer, "env", None) is None or trainer.env.is_main:
            self.check_schedule_end(getattr(trainer, "cfg", None))
            self.log.truncate_after(step)
        self._broadcast()

    def after_backward(self, trainer=None, optimizer=None):
        optimizer = optimizer or getattr(trainer, "optimizer", None)
        if optimizer is not None:  # the lr the coming step uses (the scheduler moves it after the step)
            self.lr = next((g["lr"] for g in optimizer.param_groups
                            if any(p is self._compactor for p in g["params"])), self.lr)
        penalty.mask_gradients(self.groups)
        if self.wid.pre_mask_l2 and self.last_update == 0:  # the reference's pull before the first update
            with torch.no_grad():
                for p in self._compactors:
                    if p.grad is not None:
                        p.grad.add_(p, alpha=self.wid.pre_mask_l2)

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
            if self.wid.print_updates:
                info(f"wid: mask update at step {step}: " +
                     ", ".join(f"{k} {v}" for k, v in self.kept_widths().items()), flush=True)
        return records

    def kept_widths(self):
        """Kept coordinates now: the stream S, the MLM head M, and the mean over layers of A.l and F.l."""
        by_kind = {}
        for g in self.groups:
            by_kind.setdefault(g.kind, []).append(g.n_kept)
        names = {"stream": "hidden_size", "attention": "attention_size", "ffn": "feedforward_size",
                 "mlm": "mlm_size"}
        return {names[k]: sum(v) / len(v) for k, v in by_kind.items()}

    def scalars(self, trainer=None):
        """For the trainer's event log: wid/hidden_size, wid/attention_size, wid/feedforward_size (mean
        over layers), wid/mlm_size, and wid/live_masked (masked coordinates not yet dead)."""
        out = {f"wid/{k}": v for k, v in self.kept_widths().items()}
        out["wid/live_masked"] = sum(int((~g.keep & (g.decay > 0)).sum()) for g in self.groups)
        return out

    def check_schedule_end(self, train_cfg):
        """Warn when the run ends before the target widths, or before the entries masked at the last
        update have decayed below wid.zero_below (then the merge refuses the result)."""
        last, total = self.geometry.schedule_steps, self.total_steps
        if total is None:
            return
        if total < last:
            warnings.warn(f"--total_steps {total} ends before the WID schedule reaches the target widths at "
                          f"step {last} (w_step {self.wid.w_step}); the merge will refuse the result. Raise "
                          f"--total_steps or lower --w_step.")
            return
        factor = lambda s: 1.0  # noqa: E731  (no schedule known: the configured lr throughout)
        if train_cfg is not None and getattr(train_cfg, "scheduler", None):
            factor = lr_factor(train_cfg.scheduler, total, int(total * train_cfg.warmup))

        def lr_at(s):  # the compactors' lr of the step taken after s steps
            return self.wid.compactor_learning_rate * factor(s)

        left = decay.schedule_decay(self.wid, last, total, lr_at)
        if left < self.wid.zero_below:
            return
        rate = lr_at(last) * self.wid.l2_lambda
        need = decay.steps_to_die(1.0, rate, self.wid.zero_below)
        need_text = "never at that lr" if need == float("inf") else f"{need} steps"
        warnings.warn(f"--total_steps {total} leaves {total - last} steps after the last WID mask update (step "
                      f"{last}); the coordinates masked there decay to a factor {left:.3g} by the end, not below "
                      f"wid.zero_below {self.wid.zero_below:g}, so they are not dead and the merge will refuse "
                      f"the result. At the compactor lr of that point ({lr_at(last):.3g}, factor "
                      f"1 - lr x l2_lambda = {1 - rate:.6g} per step) they need {need_text}. Raise --total_steps, "
                      f"lower --w_step, or raise --l2_lambda / --compactor_learning_rate.")

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
        # compactor_lr / l2_lambda / zero_below: for merge_compactors.py's "steps still needed".
        return {"last_update": self.last_update, "w_step": self.wid.w_step,
                "strategy": self.wid.strategy, "target_hidden_size": self.wid.target_hidden_size,
                "compactor_lr": float(self.lr), "l2_lambda": float(self.wid.l2_lambda),
                "zero_below": float(self.wid.zero_below)}

    def load_state_dict(self, state):
        for key in ("w_step", "strategy", "target_hidden_size"):
            if state.get(key) != getattr(self.wid, key):
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
    """WID's training plugins (WidFeature.training_plugins, called by pretrain.py): ([callback], [claims])."""
    log_path = log_path or default_log_path(model_cfg.wid, getattr(train_cfg, "output_model_path", None))
    cb = WidCallback(model, log_path, getattr(train_cfg, "total_steps", None))
    if model_cfg.wid.compactors_only:  # the reference's --comp_only: the teacher's weights stay as loaded
        for name, p in model.named_parameters():
            if not is_compactor(name):
                p.requires_grad_(False)
    return [cb], cb.claims()
