"""The training loop on a toy model: accumulation, hooks, mixed precision, non-finite losses."""
import os

import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.model_io import load_state_dict_file
from tencentpretrain.training import Callback, NonFiniteLossError, TrainConfig, Trainer
from tencentpretrain.training.toy import ToyLoader, ToyModel


def quiet(*args, **kwargs):
    pass


def make_trainer(batch_size=4, dropout=0.0, callbacks=(), model_seed=0, **cfg):
    torch.manual_seed(model_seed)
    model = ToyModel(dropout=dropout)
    cfg = TrainConfig(**{"total_steps": 3, "learning_rate": 1e-2, "warmup": 0.0, "report_steps": 1, **cfg})
    return Trainer(model, ToyLoader(batch_size=batch_size), cfg, callbacks=callbacks, log=quiet)


class Recorder(Callback):
    def __init__(self, name, events):
        self.name, self.events = name, events
        self.lrs, self.grad_norms = [], []

    def on_train_begin(self, trainer):
        self.events.append((self.name, "begin"))

    def extra_loss(self, trainer, batch, output):
        self.events.append((self.name, "extra_loss"))

    def after_backward(self, trainer):
        self.events.append((self.name, "after_backward"))
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        self.grad_norms.append(torch.norm(torch.stack([g.norm() for g in grads])).item())

    def on_step_end(self, trainer, step):
        self.events.append((self.name, "step_end", step))
        self.lrs.append(trainer.scheduler.get_last_lr()[0])

    def on_save(self, trainer, model_path):
        self.events.append((self.name, "save", os.path.basename(model_path)))

    def on_train_end(self, trainer):
        self.events.append((self.name, "end"))


def test_accumulation_equals_one_big_batch_and_steps_schedule_once_per_update():
    big = make_trainer(batch_size=4, total_steps=4, warmup=0.5)
    big.fit()
    events = []
    rec = Recorder("a", events)
    acc = make_trainer(batch_size=2, accumulation_steps=2, total_steps=4, warmup=0.5, callbacks=[rec])
    acc.fit()
    for (name, p), q in zip(big.model.named_parameters(), acc.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    # W = 2: lr after optimizer steps 1..4 is the lr of steps 2..5 -> 1, 1, 0.5, 0 (x 1e-2); a per-micro-batch
    # schedule would have reached the end after two updates
    assert rec.lrs == pytest.approx([1e-2, 1e-2, 0.5e-2, 0.0])
    assert acc.scheduler.last_epoch == 4 and acc.loader.position == 8
    assert [e for e in events if e[1] == "after_backward"] == [("a", "after_backward")] * 4
    assert sum(e[1] == "extra_loss" for e in events) == 8


def test_callbacks_run_in_order_with_step_numbers(tmp_path):
    events = []
    a, b = Recorder("a", events), Recorder("b", events)
    out = str(tmp_path / "m.bin")
    make_trainer(callbacks=[a, b], total_steps=2, save_checkpoint_steps=1, output_model_path=out).fit()
    assert events == [
        ("a", "begin"), ("b", "begin"),
        ("a", "extra_loss"), ("b", "extra_loss"), ("a", "after_backward"), ("b", "after_backward"),
        ("a", "step_end", 1), ("b", "step_end", 1), ("a", "save", "m.bin-1"), ("b", "save", "m.bin-1"),
        ("a", "extra_loss"), ("b", "extra_loss"), ("a", "after_backward"), ("b", "after_backward"),
        ("a", "step_end", 2), ("b", "step_end", 2), ("a", "save", "m.bin-2"), ("b", "save", "m.bin-2"),
        ("a", "end"), ("b", "end")]


def test_after_backward_sees_unclipped_gradients_and_can_edit_them():
    class ZeroHead(Callback):
        def after_backward(self, trainer):
            assert trainer.model.output.weight.grad is not None and trainer.optimizer is not None
            trainer.model.output.weight.grad.zero_()

    events = []
    rec = Recorder("r", events)
    trainer = make_trainer(callbacks=[rec, ZeroHead()], max_grad_norm=1e-3, weight_decay=0.0)
    before = trainer.model.output.weight.detach().clone()
    trainer.fit()
    assert min(rec.grad_norms) > 1e-3  # clipping comes after the callbacks
    assert torch.equal(trainer.model.output.weight.detach(), before)  # zero grad + AdamW, no decay: no move


def test_extra_loss_is_added_to_the_loss():
    class Constant(Callback):
        def extra_loss(self, trainer, batch, output):
            return torch.tensor(1.5)

    plain = make_trainer().fit()["loss"]
    assert make_trainer(callbacks=[Constant()]).fit()["loss"] == pytest.approx(plain + 1.5, abs=1e-6)


def test_report_line_has_step_metrics_lr_throughput_eta():
    lines = []
    torch.manual_seed(0)
    cfg = TrainConfig(total_steps=4, report_steps=2, learning_rate=1e-2, warmup=0.0, scheduler="constant_with_warmup")
    Trainer(ToyModel(), ToyLoader(), cfg, log=lambda line, **k: lines.append(line)).fit()
    reports = [line for line in lines if line.startswith("| step")]
    assert len(reports) == 2 and reports[0].startswith("| step 2/4 | loss ")
    for key in ("mlm_loss", "mlm_acc", "lr 1.00e-02", "tokens/s", "eta 0:00:00"):
        assert key in reports[0]
    assert lines[-1].startswith("done: 4 steps in ")


def test_bf16_autocast_runs_on_cpu():
    seen = []

    class Probe(Callback):
        def extra_loss(self, trainer, batch, output):
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)

    summary = make_trainer(callbacks=[Probe()], precision="bf16").fit()
    assert seen == [True] * 3 and torch.isfinite(torch.tensor(summary["loss"]))
    assert all(p.dtype == torch.float32 for p in ToyModel().parameters())


def test_fp16_on_cpu_is_refused():
    with pytest.raises(UserError, match="--fp16 needs a CUDA GPU.*--bf16"):
        make_trainer(precision="fp16")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    class NanAt(Callback):
        def extra_loss(self, trainer, batch, output):
            return torch.tensor(float("nan")) if trainer.step + 1 == 5 else None

    out = str(tmp_path / "m.bin")
    trainer = make_trainer(callbacks=[NanAt()], total_steps=8, save_checkpoint_steps=2, output_model_path=out)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 5.*m\.bin-4"):
        trainer.fit()
    assert sorted(os.listdir(tmp_path)) == ["m.bin-2", "m.bin-2.state.pt", "m.bin-4", "m.bin-4.state.pt"]
    sd = load_state_dict_file(out + "-4")
    assert all(torch.isfinite(v).all() for v in sd.values())
    # the in-memory model was not updated with NaN gradients either
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert isinstance(NonFiniteLossError("x"), UserError)


def test_non_finite_weights_are_never_saved(tmp_path):
    class Explode(Callback):
        def on_step_end(self, trainer, step):
            if step == 2:
                with torch.no_grad():
                    trainer.model.output.bias.fill_(float("inf"))

    out = str(tmp_path / "m.bin")
    trainer = make_trainer(callbacks=[Explode()], total_steps=4, save_checkpoint_steps=1, output_model_path=out)
    with pytest.raises(NonFiniteLossError, match="weights became non-finite at step 2.*m\\.bin-1"):
        trainer.fit()
    assert sorted(os.listdir(tmp_path)) == ["m.bin-1", "m.bin-1.state.pt"]
