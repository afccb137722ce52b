"""pretrain.py as a TencentPretrain user runs it: checkpoint names, `mv <out>-<step> <out>`, loading a
checkpoint with a head the run does not use, --log_path/--log_level, and the TensorBoard event log."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.model_io import load_state_dict_file, save_state_dict
from tencentpretrain.training import Callback, TrainConfig, Trainer
from tencentpretrain.training.events import MISSING_NOTE
from tencentpretrain.training.pretrain import main
from tencentpretrain.training.toy import ToyLoader, ToyModel
from tencentpretrain.utils.log import LOGGER
from test_pretrain_cli import args, data  # noqa: F401  (`data`: the tiny datasets fixture)

MLM = ["--data_processor", "mlm", "--target", "mlm"]


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---- checkpoint names ----------------------------------------------------------------------------

def test_every_multiple_and_the_last_step_get_a_step_file_and_the_final_name_links_the_last(data, tmp_path, capsys):
    out = tmp_path / "m.bin"
    main(args(data, out, "--total_steps", "5", "--save_checkpoint_steps", "2"))
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.bin-2", "m.bin-2.state.pt", "m.bin-4", "m.bin-4.state.pt",
                                            "m.bin-5", "m.bin-5.state.pt", "m.bin.state.pt", "m_config.json"]
    # the final name costs no disk: relative links, so the directory can be moved
    assert os.readlink(out) == "m.bin-5" and os.readlink(f"{out}.state.pt") == "m.bin-5.state.pt"
    assert torch.load(f"{out}-5.state.pt", weights_only=True)["step"] == 5
    assert not _same(load_state_dict_file(f"{out}-4"), load_state_dict_file(str(out)))
    assert f"model saved to {out}-5 (linked as {out})" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("mv") is None, reason="needs the mv command")
def test_tencentpretrain_readme_mv_then_resume(data, tmp_path, capsys):
    out = tmp_path / "m.bin"
    main(args(data, out, "--total_steps", "4", "--save_checkpoint_steps", "2"))
    last = load_state_dict_file(f"{out}-4")
    # resuming a finished run finds the step file (the final name is the same checkpoint) and writes nothing
    main(args(data, out, "--total_steps", "4", "--save_checkpoint_steps", "2", "--resume"))
    assert f"resumed from {out}-4 at step 4" in capsys.readouterr().out and os.readlink(out) == "m.bin-4"
    # TencentPretrain's README: `mv models/book_review_model.bin-5000 models/book_review_model.bin`
    proc = subprocess.run(["mv", f"{out}-4", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.islink(out) and not os.path.exists(f"{out}-4")
    assert _same(load_state_dict_file(str(out)), last)
    main(args(data, out, "--total_steps", "6", "--save_checkpoint_steps", "2", "--resume"))
    assert f"resumed from {out} at step 4" in capsys.readouterr().out
    assert os.readlink(out) == "m.bin-6" and torch.load(f"{out}.state.pt", weights_only=True)["step"] == 6


# ---- --pretrained_model_path with heads this run does not use ------------------------------------

@pytest.fixture(scope="module")
def bert_checkpoint(data, tmp_path_factory):
    """A checkpoint with both BERT heads (target.mlm.* and target.sp.*)."""
    path = tmp_path_factory.mktemp("bert") / "bert.bin"
    main(args(data, path, "--total_steps", "1"))
    return str(path)


def test_bert_checkpoint_continues_with_mlm_only_dropping_the_sp_head(data, bert_checkpoint, tmp_path, capsys):
    teacher = load_state_dict_file(bert_checkpoint)
    sp_keys = [k for k in teacher if k.startswith("target.sp.")]
    assert len(sp_keys) == 4
    out = tmp_path / "mlm.bin"
    main(args(data, out, "--total_steps", "1", "--learning_rate", "0", "--pretrained_model_path", bert_checkpoint,
              *MLM, dataset="mlm"))
    assert (f"note: {bert_checkpoint}: dropped 4 keys of heads this model does not use: target.sp (4 tensors)"
            in capsys.readouterr().out)
    # lr 0: every kept tensor comes out as loaded
    assert _same(load_state_dict_file(str(out)), {k: v for k, v in teacher.items() if k not in sp_keys})


def test_missing_keys_of_a_used_head_and_unknown_keys_stay_errors(data, bert_checkpoint, tmp_path):
    teacher = load_state_dict_file(bert_checkpoint)
    no_mlm = tmp_path / "no_mlm.bin"  # has a head (sp), but not the one this run trains
    save_state_dict({k: v for k, v in teacher.items() if not k.startswith("target.mlm.")}, str(no_mlm))
    with pytest.raises(UserError, match=r"model keys missing from the checkpoint: target\.mlm\."):
        main(args(data, tmp_path / "a.bin", "--total_steps", "1", "--pretrained_model_path", str(no_mlm),
                  *MLM, dataset="mlm"))
    extra = tmp_path / "extra.bin"
    save_state_dict({**teacher, "encoder.extra.weight": torch.zeros(2)}, str(extra))
    with pytest.raises(UserError, match=r"1 checkpoint keys the model does not have: encoder\.extra\.weight"):
        main(args(data, tmp_path / "b.bin", "--total_steps", "1", "--pretrained_model_path", str(extra),
                  *MLM, dataset="mlm"))


# ---- --log_path / --log_level ---------------------------------------------------------------------

def test_log_path_gets_the_report_lines_and_log_level_filters_the_terminal(data, tmp_path, capsys):
    log = tmp_path / "logs" / "run.log"
    main(args(data, tmp_path / "m.bin", "--total_steps", "4", "--log_path", str(log)))
    terminal = capsys.readouterr().out
    text = log.read_text()
    for line in ("| step 2/4 | loss ", "| step 4/4 | loss ", "done: 4 steps", "saved "):
        assert line in terminal and line in text
    report = next(l for l in text.splitlines() if "| step 4/4" in l)
    assert re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO\] \| step 4/4 \| loss \d", report)
    assert report.split("] ", 1)[1] in terminal.splitlines()  # the terminal shows the bare message
    assert not any(line.startswith("[") for line in terminal.splitlines())
    # ERROR: nothing on the terminal, the file (appended to) still gets everything
    main(args(data, tmp_path / "n.bin", "--total_steps", "2", "--log_path", str(log), "--log_level", "ERROR"))
    assert capsys.readouterr().out == ""
    assert log.read_text().startswith(text) and "| step 2/2 | loss" in log.read_text()[len(text):]
    assert [type(h).__name__ for h in LOGGER.handlers] == ["_Stdout"]  # the file is closed after the run


def test_unwritable_log_path_and_a_file_as_tensorboard_dir_are_refused(data, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--log_path .*file/run\.log: cannot write to it .*writable file path"):
        main(args(data, tmp_path / "m.bin", "--log_path", str(tmp_path / "file" / "run.log")))
    with pytest.raises(UserError, match=r"--tensorboard_dir .*file: a file, not a folder"):
        main(args(data, tmp_path / "m.bin", "--tensorboard_dir", str(tmp_path / "file")))
    assert not os.path.exists(tmp_path / "m.bin")


# ---- TensorBoard -----------------------------------------------------------------------------------

def _events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_log_holds_the_report_lines_numbers(data, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    tb = tmp_path / "tb"
    main(args(data, tmp_path / "m.bin", "--total_steps", "4", "--tensorboard_dir", str(tb)))
    events = _events(tb)
    assert set(events) == {"train/loss", "train/mlm_loss", "train/mlm_acc", "train/sp_loss", "train/sp_acc",
                           "train/lr", "train/tokens_per_s"}
    assert all([s for s, _ in values] == [2, 4] for values in events.values())
    lines = {int(m.group(1)): line for line in capsys.readouterr().out.splitlines()
             if (m := re.match(r"\| step (\d+)/4 ", line))}
    for tag, fmt in (("loss", ".4f"), ("mlm_acc", ".4f"), ("sp_loss", ".4f"), ("lr", ".2e")):
        for step, value in events[f"train/{tag}"]:
            assert f"| {tag} {value:{fmt}} |" in lines[step], (tag, step)
    assert events["train/lr"][0][1] > events["train/lr"][1][1] > 0  # linear decay after the warmup


class Widths(Callback):
    """A plugin's scalars, as WID reports its kept widths."""

    def scalars(self, trainer):
        return {"wid/hidden_size": 16 - trainer.step, "wid/heads_num": 2}


def test_callback_scalars_reach_the_event_log(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = TrainConfig(total_steps=4, report_steps=2, learning_rate=1e-2, tensorboard_dir=str(tmp_path / "tb"))
    Trainer(ToyModel(), ToyLoader(), cfg, callbacks=[Widths()], log=lambda *a, **k: None).fit()
    events = _events(tmp_path / "tb")
    assert events["wid/hidden_size"] == [(2, 14.0), (4, 12.0)] and events["wid/heads_num"] == [(2, 2.0), (4, 2.0)]
    assert [s for s, _ in events["train/mlm_acc"]] == [2, 4]


def test_without_tensorboard_one_note_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    cfg = TrainConfig(total_steps=3, report_steps=1, learning_rate=1e-2, tensorboard_dir=str(tmp_path / "tb"),
                      output_model_path=str(tmp_path / "m.bin"))
    Trainer(ToyModel(), ToyLoader(), cfg).fit()
    logs = capsys.readouterr().out
    assert logs.count(MISSING_NOTE) == 1 and "| step 3/3 |" in logs
    assert MISSING_NOTE == ("note: --tensorboard_dir needs the optional package 'tensorboard' (pip install "
                            "tensorboard); no event log written")
    assert not os.path.exists(tmp_path / "tb") and os.path.isfile(tmp_path / "m.bin")
