"""Checkpoint pairs: exact resume, atomic writes, weights-only state, torn pairs, extra state."""
import os

import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.training import Callback, TrainConfig, Trainer
from tencentpretrain.training import checkpoint as ckpt
from tencentpretrain.training.trainer import CheckpointWriteError
from tencentpretrain.training.toy import ToyLoader, ToyModel


class Interrupt(Exception):
    pass


class Losses(Callback):
    def __init__(self):
        self.losses = {}

    def on_step_end(self, trainer, step):
        self.losses[step] = trainer.last_loss


class Counter(Callback):
    """Extra state: how many optimizer steps it has seen, and a tensor."""
    state_key = "counter"

    def __init__(self):
        self.count, self.acc = 0, torch.zeros(2)

    def on_step_end(self, trainer, step):
        self.count += 1
        self.acc += torch.tensor([1.0, step])

    def state_dict(self):
        return {"count": self.count, "acc": self.acc.clone()}

    def load_state_dict(self, state):
        self.count, self.acc = state["count"], state["acc"].clone()


class KillAfterSave(Callback):
    def __init__(self, at):
        self.at = at

    def on_save(self, trainer, model_path):
        if trainer.step == self.at:
            raise Interrupt


def make_trainer(out, callbacks, model_seed=0, **cfg):
    torch.manual_seed(model_seed)
    cfg = TrainConfig(**{"total_steps": 6, "learning_rate": 1e-2, "warmup": 0.3, "report_steps": 100,
                         "accumulation_steps": 2, "save_checkpoint_steps": 3, "output_model_path": out,
                         "seed": 3, **cfg})
    # dropout makes the run depend on the RNG state; accumulation on the loader position
    return Trainer(ToyModel(dropout=0.2), ToyLoader(batch_size=2, seed=5), cfg, callbacks=callbacks,
                   log=lambda *a, **k: None)


def test_interrupted_and_resumed_run_reproduces_uninterrupted_losses(tmp_path):
    full = Losses()
    make_trainer(str(tmp_path / "full" / "m.bin"), [full]).fit()

    out = str(tmp_path / "cut" / "m.bin")
    first = Losses()
    with pytest.raises(Interrupt):
        make_trainer(out, [first, KillAfterSave(3)]).fit()
    assert ckpt.find_latest(out) == out + "-3"
    second, counter = Losses(), Counter()
    trainer = make_trainer(out, [second, counter], model_seed=123)  # other init: overwritten by the resume
    trainer.resume(ckpt.find_latest(out))
    trainer.fit()
    assert sorted(second.losses) == [4, 5, 6]
    resumed = {**first.losses, **second.losses}
    assert [resumed[s] for s in range(1, 7)] == pytest.approx([full.losses[s] for s in range(1, 7)], abs=1e-6)
    assert resumed == full.losses  # on CPU even bit for bit
    final = torch.load(out, weights_only=True)
    for key, value in torch.load(str(tmp_path / "full" / "m.bin"), weights_only=True).items():
        assert torch.equal(final[key], value), key


def test_state_file_is_weights_only_and_complete(tmp_path):
    out = str(tmp_path / "m.bin")
    make_trainer(out, [Counter()]).fit()
    state = torch.load(out + ".state.pt", weights_only=True)
    assert state["step"] == 6 and state["world_size"] == 1
    assert {"optimizer", "scheduler", "scaler", "ranks", "callbacks", "model_sha256", "train_config"} <= set(state)
    assert set(state["ranks"][0]["rng"]) >= {"python", "numpy", "torch"}
    assert state["ranks"][0]["loader"] == {"position": 12}
    assert state["callbacks"]["counter"]["count"] == 6
    model_sd = torch.load(out, weights_only=True)
    assert set(model_sd) == set(ToyModel().state_dict()) and not any(k.startswith("module.") for k in model_sd)


def test_extra_state_round_trip(tmp_path):
    out = str(tmp_path / "m.bin")
    saved = Counter()
    make_trainer(out, [saved], total_steps=3).fit()
    restored = Counter()
    trainer = make_trainer(out, [restored], total_steps=3)
    trainer.resume(out)
    assert restored.count == 3 and torch.equal(restored.acc, torch.tensor([3.0, 6.0]))
    assert trainer.step == 3


def _fail_writes_after(monkeypatch, n_ok):
    """torch.save works `n_ok` times, then writes half a file and raises, as a full disk would."""
    real_save, calls = torch.save, []

    def flaky_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > n_ok:
            f.write(b"PK\x03\x04 truncated")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)


@pytest.mark.parametrize("n_ok", [0, 1], ids=["model-write-fails", "state-write-fails"])
def test_failure_during_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch, n_ok):
    out = str(tmp_path / "m.bin")
    trainer = make_trainer(out, [], total_steps=2)
    trainer.fit()
    before = {name: open(tmp_path / name, "rb").read() for name in ("m.bin", "m.bin.state.pt")}
    trainer.step += 1
    trainer.model.output.bias.data += 1.0  # a different model, so a half-finished save would show
    _fail_writes_after(monkeypatch, n_ok)
    with pytest.raises(CheckpointWriteError, match=f"cannot write the checkpoint {out} at step 3: no space left "
                                                   f".*last good checkpoint: {out}-2"):
        trainer.save(out)
    # no temporary files left
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.bin-2", "m.bin-2.state.pt", "m.bin.state.pt"]
    for name, data in before.items():
        assert open(tmp_path / name, "rb").read() == data, name
    monkeypatch.undo()
    assert ckpt.load_training_state(out)["step"] == 2


def test_torn_pair_is_detected(tmp_path):
    out = str(tmp_path / "m.bin")
    make_trainer(out, [], total_steps=3, save_checkpoint_steps=1).fit()
    os.replace(out + "-1", out)  # a model file from another save beside this state file
    with pytest.raises(UserError, match="do not belong together"):
        make_trainer(out, []).resume(out)


def test_find_latest_prefers_highest_step_with_state(tmp_path):
    out = str(tmp_path / "m.bin")
    assert ckpt.find_latest(out) is None
    make_trainer(out, [], total_steps=4, save_checkpoint_steps=1).fit()
    assert ckpt.find_latest(out) == out + "-4"  # the final pair links to it: same step, the step name wins
    os.remove(out + "-4.state.pt")  # a model file whose state never got written does not count,
    assert ckpt.find_latest(out) == out + "-3"  # nor a final pair whose state link now dangles
    os.remove(out + "-3.state.pt")
    assert ckpt.find_latest(out) == out + "-2"


def test_resume_errors_name_the_problem(tmp_path):
    out = str(tmp_path / "m.bin")
    with pytest.raises(UserError, match="model file not found"):
        make_trainer(out, []).resume(out)
    make_trainer(out, [], total_steps=2).fit()
    os.remove(out + ".state.pt")
    with pytest.raises(UserError, match="training-state file .* is missing.*--pretrained_model_path"):
        make_trainer(out, []).resume(out)
