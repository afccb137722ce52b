"""The progress line printed every --report_steps, and the summary at the end (rank 0 only)."""
import time

import torch

from tencentpretrain.training.distributed import all_reduce_sum
from tencentpretrain.utils.runtime import format_duration


class Meter:
    """Sums the model's metrics over a report window; all ranks reduce them together at report time."""

    def __init__(self, env, total_steps, start_step=0):
        self.env, self.total_steps = env, total_steps
        self.run_start, self.run_start_step, self.run_tokens = time.perf_counter(), start_step, 0
        self.last = {}
        self._reset(start_step)

    def _reset(self, step):
        self.sums, self.tokens, self.loss_sum, self.loss_steps = {}, 0, 0.0, 0
        self.window_start, self.window_start_step = time.perf_counter(), step

    def add(self, metrics, tokens):
        """One micro-batch on this rank: metrics name -> (sum, count); `tokens` positions processed."""
        for name, (total, count) in metrics.items():
            # Tensors stay tensors (no device sync per micro-batch) until the report.
            s, c = self.sums.get(name, (0.0, 0.0))
            self.sums[name] = (s + (total.detach().double() if torch.is_tensor(total) else total), c + count)
        self.tokens += tokens

    def add_loss(self, loss):
        """One optimizer step's loss, already averaged over micro-batches and ranks."""
        self.loss_sum += loss
        self.loss_steps += 1

    def report(self, step, lr):
        """Reduce the window over ranks (a collective: every rank calls it) and return the line."""
        names = list(self.sums)  # the model's order (mlm_loss, mlm_acc, sp_loss, ...), same on every rank
        flat = [float(self.tokens)] + [float(v) for n in names for v in self.sums[n]]
        flat = all_reduce_sum(torch.tensor(flat, dtype=torch.float64, device=self.env.device), self.env).tolist()
        tokens = flat[0]
        values = {n: flat[1 + 2 * i] / max(flat[2 + 2 * i], 1) for i, n in enumerate(names)}
        loss = self.loss_sum / max(self.loss_steps, 1)
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        eta = (self.total_steps - step) * elapsed / max(step - self.window_start_step, 1)
        self.run_tokens += tokens
        self.last = {"step": step, "loss": loss, **values, "lr": lr, "tokens_per_s": tokens / elapsed}
        parts = [f"| step {step:>{len(str(self.total_steps))}}/{self.total_steps}", f"loss {loss:.4f}"]
        parts += [f"{n} {v:.4f}" for n, v in values.items()]
        parts += [f"lr {lr:.2e}", f"{tokens / elapsed:,.0f} tokens/s", f"eta {format_duration(eta)}"]
        self._reset(step)
        return " | ".join(parts)

    def summary(self, step):
        """Totals since the run (or the resume) started; `loss` etc. are the last window's."""
        seconds = time.perf_counter() - self.run_start
        return {**self.last, "steps": step - self.run_start_step, "seconds": seconds,
                "tokens": self.run_tokens, "tokens_per_s": self.run_tokens / max(seconds, 1e-9)}
