"""The training loop: one optimizer step = accumulate micro-batches, check the loss, callbacks, clip,
step, schedule, report, save. Works the same on CPU, one GPU and under DDP (see distributed.py).
Extension points are the callbacks in callbacks.py and parameter-group claims in optim.py.
With `zero_optimizer` under DDP each rank keeps and steps the optimizer state of its share of the
parameters only (zero.py); checkpoints hold the full state either way.

Checkpoints: a pair `<output_model_path>-<step>` at every multiple of `save_checkpoint_steps` and at the
last step; at the end `<output_model_path>` is linked to the last pair (see checkpoint.link_final).

Scalars: at every report step rank 0 collects `train/loss`, `train/<metric>` (the report line's
metrics, e.g. `train/mlm_acc`), `train/lr` and `train/tokens_per_s`, plus whatever each callback
returns from an optional method

    scalars(trainer) -> {tag: number}   rank 0 only, at report steps, after on_step_end; no collectives.
                                        Tags are used as given (e.g. "wid/hidden_size").

and hands them to the event log (`cfg.tensorboard_dir`, see events.py).
"""
import contextlib
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from tencentpretrain.errors import UserError, describe_os_error
from tencentpretrain.model_io import load_model_weights
from tencentpretrain.training import checkpoint as ckpt
from tencentpretrain.training import resume_options
from tencentpretrain.training.distributed import DistEnv, all_gather_objects, all_reduce_sum
from tencentpretrain.training.events import EventLog
from tencentpretrain.training.optim import build_optimizer, build_param_groups, build_scheduler
from tencentpretrain.training.report import Meter
from tencentpretrain.training.zero import StateSharder
from tencentpretrain.utils import runtime
from tencentpretrain.utils.log import info

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    total_steps: int = 100000
    accumulation_steps: int = 1
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup: float = 0.1                # fraction of total_steps
    scheduler: str = "linear"          # linear | cosine | constant_with_warmup
    optimizer: str = "adamw"
    bias_correction: bool = True       # False: TencentPretrain's BertAdam behaviour
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-6
    max_grad_norm: float = 1.0         # 0 disables clipping
    precision: str = "fp32"            # fp32 | bf16 | fp16 (fp16: GPU only, with a loss scaler)
    report_steps: int = 100
    save_checkpoint_steps: int = 10000
    output_model_path: str = None      # None: save nothing
    tensorboard_dir: str = None        # None: no TensorBoard event log
    seed: int = 7
    zero_optimizer: bool = False       # shard the optimizer state over data-parallel ranks (zero.py)


class NonFiniteLossError(UserError):
    same_on_all_ranks = True  # the loss is all-reduced, so every rank stops at the same step


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (full disk, read-only or forbidden folder); the pair was not kept."""


class Trainer:
    def __init__(self, model, loader, cfg, env=None, callbacks=(), claims=(), log=info, run_info=None):
        """`run_info`: options beyond `cfg` that a resume must compare (pretrain.py: batch_size, dataset
        fingerprint, model config, log settings; see resume_options.py), saved in every checkpoint."""
        self.cfg, self.env, self.loader = cfg, env or DistEnv(), loader
        self.run_info = dict(run_info or {})
        env = self.env
        if cfg.precision not in PRECISIONS:
            raise UserError(f"precision {cfg.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if cfg.precision == "fp16" and env.device.type != "cuda":
            raise UserError("--fp16 needs a CUDA GPU (fp16 training relies on a GPU loss scaler); "
                            "on CPU use --bf16")
        if cfg.precision == "bf16" and env.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--bf16: this GPU has no bf16 support; use --fp16")
        if cfg.accumulation_steps < 1 or cfg.total_steps < 1 or cfg.report_steps < 1:
            raise UserError("--accumulation_steps, --total_steps and --report_steps must be at least 1")
        self.log = log if env.is_main else (lambda *a, **k: None)
        self.model = model.to(env.device)
        self.callbacks = list(callbacks)
        claims = list(claims) + [c for cb in self.callbacks for c in cb.param_claims(self.model)]
        groups = build_param_groups(self.model, cfg.learning_rate, cfg.weight_decay, claims)
        self.optimizer = build_optimizer(groups, cfg.optimizer, cfg.learning_rate, cfg.betas, cfg.eps,
                                         cfg.bias_correction)
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, cfg.total_steps, cfg.warmup)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.precision == "fp16")
        self.ddp_model = self.model
        if env.distributed:  # broadcasts rank 0's parameters to every rank
            ids = [env.device.index] if env.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)
        # --zero_optimizer: each rank keeps and steps the optimizer state of its share of the parameters
        self.sharder = StateSharder(self.optimizer, env) if cfg.zero_optimizer and env.distributed else None
        if cfg.zero_optimizer and not env.distributed:
            self.log("note: --zero_optimizer has no effect in a single process (there is no other rank to share "
                     "the optimizer state with); the run is the same as without it", flush=True)
        self.step = 0
        self.last_loss = None  # the last step's loss (averaged over micro-batches and ranks)
        self.last_checkpoint = None  # the newest pair written or resumed from
        self._resumed_rng = None

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self):
        cfg, env = self.cfg, self.env
        self._call("on_train_begin", self)
        if self._resumed_rng is not None:
            ckpt.set_rng_state(self._resumed_rng)
        else:  # ranks draw different dropout masks; data order is the loader's business
            runtime.seed_everything(cfg.seed + env.rank)
        self._log_start()
        self.meter = Meter(env, cfg.total_steps, self.step)
        events = EventLog(cfg.tensorboard_dir, self.log) if cfg.tensorboard_dir and env.is_main else None
        try:
            self._loop(events)
        finally:
            if events is not None:
                events.close()
        linked = cfg.output_model_path and self._link_final()
        self._call("on_train_end", self)
        summary = self.meter.summary(self.step)
        self.log(f"done: {summary['steps']} steps in {runtime.format_duration(summary['seconds'])}, "
                 f"{summary['tokens_per_s']:,.0f} tokens/s, last loss {summary.get('loss', float('nan')):.4f}"
                 + (f", model saved to {self.last_checkpoint} (linked as {cfg.output_model_path})" if linked
                    else f", last checkpoint {self.last_checkpoint}" if self.last_checkpoint else ""), flush=True)
        return summary

    def _loop(self, events):
        cfg = self.cfg
        batches = self._batches()
        self.ddp_model.train()
        while self.step < cfg.total_steps:
            loss = self.last_loss = self._forward_backward(batches)
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({loss}) at step {self.step + 1}; stopped before updating the model. "
                    f"Last good checkpoint: {self.last_checkpoint or 'none written in this run'}. Lower "
                    f"--learning_rate or raise --warmup, check the data, or use --bf16 instead of --fp16.")
            self.scaler.unscale_(self.optimizer)  # callbacks and clipping see true gradients
            self._call("after_backward", self)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            lr = self.lr()
            if self.sharder is not None:  # steps this rank's share, then shares the updated weights
                self.sharder.step(lambda: self.scaler.step(self.optimizer))
            else:
                self.scaler.step(self.optimizer)
            self.scaler.update()
            # Once per optimizer step. TencentPretrain steps its scheduler after every micro-batch, so
            # with --accumulation_steps N its warmup and decay ran N times too fast (a bug not kept).
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self._call("on_step_end", self, self.step)
            if self.step % cfg.report_steps == 0 or self.step == cfg.total_steps:
                self.log(self.meter.report(self.step, lr), flush=True)
                if events is not None:
                    events.write(self.step, self.scalars())
            if cfg.output_model_path and (self.step % cfg.save_checkpoint_steps == 0
                                          or self.step == cfg.total_steps):
                self.save(ckpt.step_path(cfg.output_model_path, self.step))

    def scalars(self):
        """The last report's numbers under `train/`, and every callback's `scalars(trainer)`."""
        out = {f"train/{name}": value for name, value in self.meter.last.items() if name != "step"}
        for cb in self.callbacks:
            if hasattr(cb, "scalars"):
                out.update(cb.scalars(self) or {})
        return out

    def _forward_backward(self, batches):
        """Accumulate gradients over the micro-batches of one step; the loss averaged over ranks."""
        accum, total = self.cfg.accumulation_steps, torch.zeros((), device=self.env.device)
        for i in range(accum):
            batch = {k: v.to(self.env.device, non_blocking=True) for k, v in next(batches).items()}
            # DDP all-reduces gradients only on the last micro-batch.
            skip_sync = self.env.distributed and i < accum - 1
            with self.ddp_model.no_sync() if skip_sync else contextlib.nullcontext():
                with self.autocast():
                    out = self.ddp_model(batch)
                    loss = out.loss
                    for cb in self.callbacks:
                        extra = cb.extra_loss(self, batch, out)
                        if extra is not None:
                            loss = loss + extra
                self.scaler.scale(loss / accum).backward()
            total += loss.detach().float()
            self.meter.add(out.metrics, batch["src"].numel())
        total = all_reduce_sum(total / accum, self.env) / self.env.world_size
        loss = total.item()
        self.meter.add_loss(loss)
        return loss

    def autocast(self):
        return runtime.autocast(self.env.device, self.cfg.precision)

    def _batches(self):
        while True:  # a finite loader is read again (next epoch)
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
            if empty:
                raise UserError("the data loader yielded no batch (is the dataset smaller than one batch "
                                "per process?)")

    def lr(self):
        groups = self.optimizer.param_groups
        return next((g["lr"] for g in groups if g.get("name") == "default"), groups[0]["lr"])

    def _call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _log_start(self):
        n = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        env, cfg = self.env, self.cfg
        where = f"{env.world_size} processes ({env.backend}) on {env.device.type}" if env.distributed \
            else str(env.device)
        if self.sharder is not None:
            where += " (optimizer state sharded: --zero_optimizer)"
        self.log(f"training {n / 1e6:.2f}M parameters ({n_train / 1e6:.2f}M trainable) on {where}, "
                 f"{cfg.precision}, accumulation {cfg.accumulation_steps}, steps {self.step + 1}..{cfg.total_steps}, "
                 f"optimizer groups: " + ", ".join(f"{g['name']}(lr {g['initial_lr']:.1e}, wd {g['weight_decay']}, "
                                                   f"{len(g['params'])})" for g in self.optimizer.param_groups),
                 flush=True)

    # ---- checkpoints --------------------------------------------------------------------------
    def _link_final(self):
        """Point `<output_model_path>` at the last step's pair (rank 0); True if done. A run resumed at
        its last step from another name trained and saved nothing, so it changes no file either."""
        last = ckpt.step_path(self.cfg.output_model_path, self.step)
        if not (self.env.is_main and self.last_checkpoint == last):
            return False
        ckpt.link_final(last, self.cfg.output_model_path)
        return True

    def save(self, model_path):
        """Write the checkpoint pair (a collective: every rank calls it; rank 0 writes)."""
        # Never let a broken model overwrite or follow the last good checkpoint (ranks hold equal weights).
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise NonFiniteLossError(f"the weights became non-finite at step {self.step}; {model_path} was not "
                                     f"written. Last good checkpoint: {self.last_checkpoint or 'none'}.")
        loader_state = self.loader.state_dict() if hasattr(self.loader, "state_dict") else None
        ranks = all_gather_objects({"rng": ckpt.rng_state(), "loader": loader_state}, self.env)
        # Sharded: gathered on rank 0 into the dict an unsharded run saves (a collective).
        optimizer_state = self.sharder.state_dict() if self.sharder is not None else None
        if not self.env.is_main:
            self.last_checkpoint = model_path
            return
        state = {
            "format": ckpt.FORMAT, "step": self.step, "world_size": self.env.world_size,
            "optimizer": optimizer_state or self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ranks": ranks,
            "callbacks": {cb.key(): sd for cb in self.callbacks if (sd := cb.state_dict()) is not None},
            "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()},
            "run": self.run_info,
        }
        start = time.perf_counter()
        try:
            ckpt.save_checkpoint(model_path, self.model.state_dict(), state)
        except (OSError, RuntimeError) as err:
            problem = describe_os_error(err, with_file=False)
            if problem is None:
                raise
            raise CheckpointWriteError(
                f"cannot write the checkpoint {model_path} at step {self.step}: {problem}. Nothing of it was kept; "
                f"last good checkpoint: {self.last_checkpoint or 'none written in this run'}. Then re-run the "
                f"command with --resume to continue from it.") from err
        self.last_checkpoint = model_path
        self.log(f"saved {model_path} and {ckpt.state_path(model_path)} "
                 f"({time.perf_counter() - start:.1f}s)", flush=True)
        self._call("on_save", self, model_path)

    def resume(self, model_path, state=None):
        """Restore model, optimizer, scheduler, scaler, step, RNG, data position and callback state.
        `state`: the pair's training state when the caller already loaded and verified it.
        Options that differ from the checkpoint's are refused or applied (resume_options.py)."""
        state = state if state is not None else ckpt.load_training_state(model_path)
        applied, notes = resume_options.check(state, model_path, self.cfg, self.run_info, self.env.world_size)
        orphans = sorted(set(state["callbacks"]) - {cb.key() for cb in self.callbacks})
        if orphans:  # e.g. a KD or WID run resumed without its config block: it would go on as plain training
            raise UserError(f"{ckpt.state_path(model_path)} holds the training state of {', '.join(orphans)}, which "
                            f"this run does not have; resume with the same model config (its {orphans[0]} block) "
                            f"and flags, or start a new run with --pretrained_model_path {model_path}")
        load_model_weights(self.model, model_path)
        configured = {g.get("name"): (g["initial_lr"], g["weight_decay"]) for g in self.optimizer.param_groups}
        try:
            (self.sharder or self.optimizer).load_state_dict(state["optimizer"])
        except ValueError as err:
            raise UserError(f"{ckpt.state_path(model_path)}: the optimizer state does not fit this run's "
                            f"parameter groups ({err}); resume with the same model config and plugins") from None
        self.scheduler.load_state_dict(state["scheduler"])
        planned_lr = self.lr()
        if self._apply_group_settings(configured) or resume_options.reschedules(applied):
            self._reschedule()
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        mine = state["ranks"][self.env.rank]
        if mine["loader"] is not None:
            self.loader.load_state_dict(mine["loader"])
        self._resumed_rng = mine["rng"]  # applied in fit(), after on_train_begin
        for cb in self.callbacks:
            if cb.key() in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.key()])
        self.step = state["step"]
        self.last_checkpoint = model_path
        self.log(f"resumed from {model_path} at step {self.step}", flush=True)
        for line in notes + [f"resume applies {c.line()}" for c in applied]:
            self.log(line, flush=True)
        if self.lr() != planned_lr:
            self.log(f"resume: the learning rate of step {self.step + 1} is {self.lr():.3g} (the checkpoint's "
                     f"schedule had {planned_lr:.3g})", flush=True)
        return state

    def _apply_group_settings(self, configured):
        """Give the restored parameter groups this run's lr and weight decay (a resume restores the
        checkpoint's); True if a learning rate changed. `configured`: group name -> (lr, weight decay)."""
        lr_changed = False
        for i, group in enumerate(self.optimizer.param_groups):
            if group.get("name") not in configured:
                continue
            lr, weight_decay = configured[group["name"]]
            if group["initial_lr"] != lr:
                group["initial_lr"] = self.scheduler.base_lrs[i] = lr
                lr_changed = True
            group["weight_decay"] = weight_decay
        return lr_changed

    def _reschedule(self):
        """Set the coming step's lr from this run's schedule (total steps, warmup, base lrs)."""
        s = self.scheduler
        for group, base, factor in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas):
            group["lr"] = base * factor(s.last_epoch)
        s._last_lr = [group["lr"] for group in self.optimizer.param_groups]
