"""Training runs that meet a hostile world: changed options on resume, damaged and half-written
checkpoints, two runs on one output, outputs that cannot be written, bad option values."""
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import fields

import pytest
import torch

from test_pretrain_cli import args, data  # noqa: F401  (the tiny corpus, vocabulary and model)
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.errors import UserError, run_cli
from tencentpretrain.training import TrainConfig
from tencentpretrain.training import checkpoint as ckpt
from tencentpretrain.training import outputs, resume_options
from tencentpretrain.training.pretrain import main


def run(data, out, *extra, **kwargs):  # noqa: F811
    main(args(data, out, *extra, **kwargs))


def files_of(folder):
    """name -> bytes of the regular files (not links) in `folder`."""
    return {n: (folder / n).read_bytes() for n in os.listdir(folder) if not os.path.islink(folder / n)}


def lock_file(out, pid, host=None):
    with open(f"{out}.lock", "w") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname(), "started": "2024-01-01 00:00:00",
                   "token": "x"}, f)


# ---- resume with changed options ------------------------------------------------------------------

def test_resume_refuses_changed_batch_dropout_accumulation_with_old_and_new_values(data, tmp_path):  # noqa: F811
    out = tmp_path / "m.bin"
    run(data, out, "--total_steps", "2")
    before = files_of(tmp_path)
    with pytest.raises(UserError) as err:
        run(data, out, "--total_steps", "4", "--resume", "--batch_size", "8", "--dropout", "0.2",
            "--accumulation_steps", "2")
    message = str(err.value)
    assert f"cannot resume {out}-2 with these options" in message
    assert "--batch_size: 4 in the checkpoint, 8 now" in message
    assert "dropout (model config): 0.1 in the checkpoint, 0.2 now" in message
    assert "--accumulation_steps: 1 in the checkpoint, 2 now" in message
    assert "--total_steps" not in message  # allowed to change
    # refused before anything was written: same files, same bytes, no lock left
    assert files_of(tmp_path) == before


def test_resume_refuses_another_dataset_and_seed_but_takes_a_moved_one(data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.bin"
    run(data, out, "--total_steps", "2")
    other = dict(data, bert=str(tmp_path / "other.tpd"), moved=str(tmp_path / "moved.tpd"))
    preprocess(PreprocessOptions(os.path.join(os.path.dirname(data["vocab"]), "corpus.txt"), other["bert"],
                                 vocab_path=data["vocab"], seq_length=32, dynamic_masking=True, seed=8),
               log=open(os.devnull, "w"))
    with pytest.raises(UserError) as err:
        run(other, out, "--total_steps", "4", "--resume", "--seed", "8")
    assert f"--dataset_path (contents): {data['bert']} (" in str(err.value)
    assert "--seed: 7 in the checkpoint, 8 now" in str(err.value)
    shutil.copyfile(data["bert"], other["moved"])
    run(other, out, "--total_steps", "3", "--resume", dataset="moved")
    assert (f"resume applies --dataset_path: {data['bert']!r} in the checkpoint, {other['moved']!r} now (the same "
            f"contents at a new path)") in capsys.readouterr().out


def test_changed_total_steps_and_learning_rate_are_applied_and_printed(data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.bin"
    run(data, out, "--total_steps", "2", "--warmup", "0")
    capsys.readouterr()
    run(data, out, "--total_steps", "4", "--warmup", "0", "--resume", "--learning_rate", "5e-4",
        "--report_steps", "1")
    logs = capsys.readouterr().out
    assert f"resumed from {out}-2 at step 2" in logs
    assert ("resume applies --total_steps: 2 in the checkpoint, 4 now (the learning-rate schedule is "
            "recomputed") in logs
    assert "resume applies --learning_rate: 0.001 in the checkpoint, 0.0005 now" in logs
    assert "resume applies --report_steps: 2 in the checkpoint, 1 now" in logs
    # linear decay over the new total: step 3 uses 5e-4 * (1 - 2/4); the old schedule had reached 0
    assert "the learning rate of step 3 is 0.00025 (the checkpoint's schedule had 0)" in logs
    assert "| step 3/4 |" in logs and "lr 2.50e-04" in logs and "lr 1.25e-04" in logs
    state = torch.load(f"{out}-4.state.pt", weights_only=True)
    assert state["step"] == 4 and state["train_config"]["learning_rate"] == 5e-4
    assert {g["initial_lr"] for g in state["optimizer"]["param_groups"]} == {5e-4}


def test_total_steps_below_the_checkpoint_is_refused(data, tmp_path):  # noqa: F811
    out = tmp_path / "m.bin"
    run(data, out, "--total_steps", "3", "--save_checkpoint_steps", "3")
    with pytest.raises(UserError, match="--total_steps: 3 in the checkpoint, 2 now .the checkpoint is already at "
                                        "step 3"):
        run(data, out, "--total_steps", "2", "--resume")


def test_every_training_option_has_a_resume_rule():
    assert {f.name for f in fields(TrainConfig)} == set(resume_options.TRAIN_OPTIONS)
    assert resume_options._model_policy("dropout")[0] == resume_options.REFUSE
    assert resume_options._model_policy("wid.l2_lambda")[0] == resume_options.APPLY
    assert resume_options._model_policy("wid.w_step")[0] == resume_options.REFUSE


def test_an_old_checkpoint_without_recorded_options_says_what_is_not_compared():
    state = {"world_size": 1, "step": 2, "train_config": {"total_steps": 4}}
    refused, applied, notes = resume_options.compare(state, TrainConfig(total_steps=4), {"batch_size": 4}, 1)
    assert not refused and not applied
    assert notes == ["note: the checkpoint does not record --batch_size (an older version wrote it); they are "
                     "not compared with this run's"]


# ---- damaged and half-written checkpoints ---------------------------------------------------------

@pytest.mark.parametrize("damage", ["model-changed", "state-unreadable"])
def test_damaged_newest_pair_falls_back_to_the_newest_intact_pair(data, tmp_path, capsys, damage):  # noqa: F811
    out = tmp_path / "m.bin"
    run(data, out, "--total_steps", "4", "--save_checkpoint_steps", "2")
    if damage == "model-changed":
        with open(f"{out}-4", "ab") as f:
            f.write(b"torn")
    else:
        (tmp_path / "m.bin-4.state.pt").write_bytes(b"not a state file")
    capsys.readouterr()
    run(data, out, "--total_steps", "4", "--save_checkpoint_steps", "2", "--resume")
    logs = capsys.readouterr().out
    assert f"note: --resume skips {out}-4: " in logs
    assert f"note: --resume falls back to {out}-2 (step 2), the newest intact checkpoint" in logs
    assert f"resumed from {out}-2 at step 2" in logs and "done: 2 steps" in logs
    assert ckpt.load_training_state(f"{out}-4")["step"] == 4  # rewritten intact


def test_no_intact_pair_at_all_is_refused(data, tmp_path):  # noqa: F811
    out = tmp_path / "m.bin"
    run(data, out, "--total_steps", "2")
    (tmp_path / "m.bin-2.state.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="no intact checkpoint of .*m.bin"):
        run(data, out, "--total_steps", "2", "--resume")


def test_stale_partials_of_a_killed_save_are_removed_at_start(data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.bin"
    stale = ["m.bin-2.partial", "m.bin-2.partial.tmp", "m.bin-2.state.pt.partial.tmp", "m.bin.partial",
             "m.bin.state.pt.partial"]
    kept = ["other.bin-2.partial", "m.bin-notes.partial", "notes.txt"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 1000)
    run(data, out, "--total_steps", "1", "--resume")
    assert "note: removed 5 temporary file(s) of an interrupted save (0.0 MB)" in capsys.readouterr().out
    left = set(os.listdir(tmp_path))
    assert not left & set(stale) and set(kept) <= left


# ---- one writer per output ------------------------------------------------------------------------

def test_a_second_run_on_a_locked_output_is_refused(data, tmp_path):  # noqa: F811
    out = tmp_path / "m.bin"
    lock_file(out, os.getppid())  # a live process on this host holds the output
    with pytest.raises(UserError, match=f"another run is writing to this output .pid {os.getppid()} on "):
        run(data, out, "--total_steps", "1")
    assert os.path.exists(f"{out}.lock") and not os.path.exists(out)  # its lock is left alone, nothing written
    lock_file(out, 1, host="another-host")  # a lock from elsewhere is never taken over
    with pytest.raises(UserError, match="on another-host.*delete .*m.bin.lock"):
        run(data, out, "--total_steps", "1")


def test_the_lock_is_held_while_a_run_trains(data, tmp_path):  # noqa: F811
    out = tmp_path / "m.bin"
    seen, real = {}, outputs.remove_stale_partials

    def spy(path):
        seen["lock"] = json.load(open(f"{path}.lock"))
        return real(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(outputs, "remove_stale_partials", spy)
        run(data, out, "--total_steps", "1")
    assert seen["lock"]["pid"] == os.getpid() and seen["lock"]["host"] == socket.gethostname()
    assert not os.path.exists(f"{out}.lock")  # released at the end
    with pytest.raises(UserError):
        run(data, out, "--total_steps", "2", "--resume", "--batch_size", "8")
    assert not os.path.exists(f"{out}.lock")  # and after an error


def test_a_stale_lock_of_a_dead_process_is_taken_over(data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.bin"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock_file(out, gone.pid)
    run(data, out, "--total_steps", "1")
    assert f"note: took over the lock {out}.lock of a run that is gone (pid {gone.pid} on" in capsys.readouterr().out
    assert os.path.isfile(out) and not os.path.exists(f"{out}.lock")


def test_two_cli_runs_at_once_one_trains_the_other_is_refused(data, tmp_path, repo_root):  # noqa: F811
    out = tmp_path / "m.bin"
    cmd = [sys.executable, os.path.join(repo_root, "pretrain.py"), *args(data, out, "--total_steps", "3")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # both run only if the first ended before the second began
    for code, err in results:
        if code == 2:
            # the lock may be caught while the first run is still writing its pid into it
            assert err.count("\n") == 1 and ("another run is writing to this output (pid " in err
                                             or "another run is starting on this output" in err), err
    assert ckpt.load_training_state(f"{out}-3")["step"] == 3 and not os.path.exists(f"{out}.lock")


# ---- outputs that cannot be written ---------------------------------------------------------------

def test_output_path_that_is_a_folder_or_under_a_file_is_refused_before_training(data, tmp_path):  # noqa: F811
    (tmp_path / "out.bin").mkdir()
    with pytest.raises(UserError, match="out.bin: is an existing folder; give a file path, e.g. .*/model.bin"):
        run(data, tmp_path / "out.bin", "--total_steps", "1")
    assert os.listdir(tmp_path / "out.bin") == []
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="file.txt is a file, not a folder"):
        run(data, tmp_path / "file.txt" / "m.bin", "--total_steps", "1")


def test_unwritable_output_folder_is_refused(data, tmp_path, monkeypatch):  # noqa: F811
    # Root ignores permission bits, so chmod would not make the folder unwritable here: os.access is
    # what the check asks, and it is told "no".
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match=f"the folder {tmp_path} is not writable"):
        run(data, tmp_path / "m.bin", "--total_steps", "1")
    assert os.listdir(tmp_path) == []


def test_too_little_free_space_is_refused_or_warned(tmp_path, capsys, monkeypatch):
    pair = outputs.checkpoint_pair_bytes(1000)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: type("U", (), {"free": pair - 1}))
    with pytest.raises(UserError, match="one checkpoint pair needs about"):
        outputs.check_free_space(str(tmp_path / "m.bin"), 1000, saves=3)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: type("U", (), {"free": 2 * pair}))
    outputs.check_free_space(str(tmp_path / "m.bin"), 1000, saves=3)
    assert "warning: " in capsys.readouterr().out


def test_full_disk_during_a_save_is_one_error_line_exit_2_previous_pair_intact(data, tmp_path,  # noqa: F811
                                                                              monkeypatch, capsys):
    out = tmp_path / "m.bin"
    real_save, calls = torch.save, []

    def full_after_first_pair(obj, f, *a, **k):
        calls.append(1)
        if len(calls) > 2:  # the first pair (model, state) fits; the next write hits a full disk
            f.write(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_after_first_pair)
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, args(data, out, "--total_steps", "4", "--save_checkpoint_steps", "2"))
    monkeypatch.undo()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: cannot write the checkpoint {out}-4 at step 4: no space left on the disk; free "
                          f"space") and f"last good checkpoint: {out}-2" in err and "--resume" in err
    assert sorted(os.listdir(tmp_path)) == ["m.bin-2", "m.bin-2.state.pt", "m_config.json"]
    assert ckpt.load_training_state(f"{out}-2")["step"] == 2


@pytest.mark.parametrize("raised, expected", [
    (OSError(errno.EROFS, "Read-only file system", "/ro/x.bin"), "error: /ro/x.bin: read-only file system; choose"),
    (OSError(errno.EACCES, "Permission denied", "/x/y"), "error: /x/y: permission denied; check the permissions"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
     "error: the write did not finish (usually a full disk) ([enforce fail at inline_container.cc:672]"),
    (OSError("1048595 requested and 524288 written"), "error: no space left on the disk (1048595 requested"),
])
def test_every_cli_turns_environment_failures_into_one_error_line(raised, expected, capsys):
    def failing(argv):
        raise raised

    with pytest.raises(SystemExit) as exit_:
        run_cli(failing)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(expected) and err.count("\n") == 1


def test_other_errors_keep_their_traceback():
    def failing(argv):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(failing)


# ---- bad option values ----------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--learning_rate", "-1", "--learning_rate -1.0: must be a finite number >= 0"),
    ("--learning_rate", "nan", "--learning_rate nan: must be a finite number >= 0"),
    ("--weight_decay", "-0.1", "--weight_decay -0.1: must be a finite number >= 0"),
    ("--warmup", "1.5", "--warmup 1.5: a fraction of --total_steps between 0 and 1"),
    ("--max_grad_norm", "-1", "--max_grad_norm -1.0: must be >= 0"),
])
def test_bad_option_values_are_refused_up_front(data, tmp_path, flag, value, message):  # noqa: F811
    with pytest.raises(UserError, match=message.replace("+", r"\+")):
        run(data, tmp_path / "m.bin", "--total_steps", "1", flag, value)
    assert os.listdir(tmp_path) == []
