"""The one fine-tuning loop every task shares.

A task (tasks/base.py) supplies `loss(model, batch)` and `evaluate(model, dev_data, run) -> metrics`
(an ordered dict whose first entry is the task's main metric); the engine does batching,
AdamW with linear warmup/decay, gradient accumulation, bf16 autocast, progress lines,
a dev report per epoch, and keeps the best-on-dev weights (saved atomically).
"""
import dataclasses
import math
import time

import torch

from tencentpretrain.errors import UserError
from tencentpretrain.model_io import save_state_dict
from tencentpretrain.training.optim import build_optimizer, build_param_groups, build_scheduler
from tencentpretrain.utils.runtime import autocast, format_duration, seed_everything


@dataclasses.dataclass
class RunConfig:
    epochs_num: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup: float = 0.1  # fraction of the optimizer steps
    seed: int = 7
    report_steps: int = 100
    accumulation_steps: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    bf16: bool = False
    device: str = "cpu"

    def autocast(self):
        return autocast(self.device, "bf16" if self.bf16 else "fp32")


def pick_device(name=None):
    """--device checked before anything is read: a torch device this machine has (default: cuda if any)."""
    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device '{name}' is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            have = f"{count} CUDA device(s) (cuda:0..cuda:{count - 1})" if count else "no CUDA device"
            raise UserError(f"--device {name}: this machine has {have}; use --device cpu or another device")
    return name


def batches(tensors, batch_size, generator=None, device="cpu"):
    """Slices of a dict of equal-length tensors (shuffled when a generator is given).

    Columns where the whole batch is padding (seg == 0) are cut off, so short sentences
    do not pay for --seq_length.
    """
    n = len(next(iter(tensors.values())))
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        batch = {k: v[idx] for k, v in tensors.items()}
        if "seg" in batch:
            width = int((batch["seg"] > 0).sum(1).max())
            for k in ("src", "seg"):
                batch[k] = batch[k][:, :width]
        yield {k: v.to(device) for k, v in batch.items()}


def pad(rows, length, value=0):
    return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def format_metrics(metrics):
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def fit(model, task, train_tensors, dev_sets, run, output_model_path=None, log=print):
    """Train `model` on `train_tensors`; evaluate on each (name, data) of `dev_sets` after every epoch.

    The first dev set's first metric picks the best epoch; its weights are written to
    output_model_path (and kept in `model` on return). With no dev set the last epoch is kept.
    Returns {"best_epoch", "best": metrics of the best epoch, "history": [...]}.

    Reproducible on CPU: dropout draws from the global RNG, re-seeded here with run.seed, and
    the shuffling from its own generator seeded with run.seed. Build the model after
    seed_everything(run.seed) too, so that its new head starts the same way (as the CLIs do).
    """
    seed_everything(run.seed)
    model.to(run.device)
    n = len(next(iter(train_tensors.values())))
    if n == 0:
        raise UserError("the training set is empty")
    steps_per_epoch = math.ceil(math.ceil(n / run.batch_size) / run.accumulation_steps)
    total_steps = steps_per_epoch * run.epochs_num
    optimizer = build_optimizer(build_param_groups(model, run.learning_rate, run.weight_decay),
                                lr=run.learning_rate)
    scheduler = build_scheduler(optimizer, "linear", total_steps, run.warmup)
    generator = torch.Generator().manual_seed(run.seed)
    log(f"training on {n} examples: {run.epochs_num} epochs x {steps_per_epoch} steps of "
        f"{run.batch_size * run.accumulation_steps} examples, device {run.device}"
        f"{', bf16 autocast' if run.bf16 else ''}")
    best, best_epoch, best_state, history = None, 0, None, []
    step, t_start = 0, time.time()
    for epoch in range(1, run.epochs_num + 1):
        model.train()
        window_loss, window_n, window_examples, t_window = 0.0, 0, 0, time.time()
        micro = 0
        for batch in batches(train_tensors, run.batch_size, generator, run.device):
            with run.autocast():
                loss = task.loss(model, batch)
            value = loss.item()
            if not math.isfinite(value):
                raise UserError(_non_finite(value, epoch, step + 1, run, output_model_path if best_state else None,
                                            best_epoch))
            (loss / run.accumulation_steps).backward()
            window_loss, window_n = window_loss + value, window_n + 1
            window_examples += len(batch["src"])
            micro += 1
            if micro % run.accumulation_steps and micro < math.ceil(n / run.batch_size):
                continue
            if run.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), run.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % run.report_steps == 0 or step == total_steps:
                elapsed = time.time() - t_window
                eta = (time.time() - t_start) / step * (total_steps - step)
                log(f"epoch {epoch}/{run.epochs_num} step {step}/{total_steps} loss {window_loss / window_n:.4f} "
                    f"lr {scheduler.get_last_lr()[0]:.2e} {window_examples / max(elapsed, 1e-9):.1f} examples/s "
                    f"ETA {format_duration(eta, compact=True)}")
                window_loss, window_n, window_examples, t_window = 0.0, 0, 0, time.time()
        if not dev_sets:
            best_epoch, best = epoch, {}
            continue
        reports = {name: evaluate(model, task, data, run) for name, data in dev_sets}
        history.append(reports)
        first = reports[dev_sets[0][0]]
        main_metric = next(iter(first))
        improved = best is None or first[main_metric] > best[main_metric]
        for name, metrics in reports.items():
            best_mark = " (best)" if improved and metrics is first else ""
            log(f"epoch {epoch} {name}: {format_metrics(metrics)}{best_mark}")
        if improved:
            best, best_epoch = first, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if output_model_path:
                save_state_dict(best_state, output_model_path)
    if best_state is not None:
        model.load_state_dict(best_state)
    elif output_model_path:
        save_state_dict(model.state_dict(), output_model_path)
    took = time.time() - t_start
    log(f"done: {step} steps in {format_duration(took, compact=True)} "
        f"({n * run.epochs_num / max(took, 1e-9):.1f} examples/s)"
        + (f"; best dev {next(iter(best))} {next(iter(best.values())):.4f} at epoch {best_epoch}" if best else "")
        + (f"; model saved to {output_model_path}" if output_model_path else ""))
    return {"best_epoch": best_epoch, "best": best, "history": history}


def _non_finite(value, epoch, step, run, saved_path, saved_epoch):
    """The error of a nan/inf training loss: where it happened, what was kept, what to try."""
    kept = (f"{saved_path} holds the best model so far (epoch {saved_epoch})" if saved_path else
            "no model was saved")
    return (f"the training loss became {value} at epoch {epoch}, step {step}; training stopped and {kept}. "
            f"Lower --learning_rate (now {run.learning_rate:g})"
            + (", drop --bf16" if run.bf16 else "") + ", or check the labels and the pre-trained weights")


@torch.no_grad()
def evaluate(model, task, data, run):
    model.eval()
    try:
        return task.evaluate(model, data, run)
    finally:
        model.train()


@torch.no_grad()
def forward_all(model, tensors, run, per_token=False):
    """Model outputs over a dataset in order, as float32 CPU tensors, one per model output.

    per_token: outputs are [B, L] per-position scores; trimmed batches are padded back to
    the full length with -10000 so they stack.
    """
    model.eval()
    full = tensors["src"].shape[1]
    outs = []
    for batch in batches({k: tensors[k] for k in ("src", "seg")}, run.batch_size, None, run.device):
        with run.autocast():
            out = model(batch["src"], batch["seg"])
        out = out if isinstance(out, tuple) else (out,)
        out = tuple(o.float().cpu() for o in out)
        if per_token:
            out = tuple(torch.nn.functional.pad(o, (0, full - o.shape[1]), value=-10000.0) for o in out)
        outs.append(out)
    return tuple(torch.cat(parts) for parts in zip(*outs))
