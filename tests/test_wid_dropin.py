"""The WID reference code's commands work here (issue 8, item 5), and the merge refuses a checkpoint
whose masked entries are still alive (item 7): tiny runs through pretrain.py's CLI and the merge script."""
import json
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file
from tencentpretrain.training.pretrain import main as pretrain
from tencentpretrain.training.pretrain import prepare
from tencentpretrain.wid import build_wid_plugin
from tencentpretrain.wid.decay import schedule_decay, steps_to_die
from tencentpretrain.wid.merge import merge
from test_wid_e2e import SHAPE, WID_CONFIG, mlm_dataset, teacher  # noqa: F401  (fixtures)
from test_wid_helpers import batch, build_pair, logits, train, wid_dict, zero_masked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAIN_CONFIG = os.path.join(ROOT, "models", "bert", "tiny_config.json")  # target [mlm, sp], processor bert
MERGE = os.path.join(ROOT, "scripts", "merge_compactors.py")
# The WID group of the reference code's pretrain.py (github.com/wutaiqiang/WID-NAACL2024).
REFERENCE_FLAGS = ["--weight_squeeze", "--compactor_learning_rate", "5e-5", "--w_step", "1", "--target_dim", "24",
                   "--l2_lambda", "20", "--compactor_mask_strategy", "dim", "--comp_only", "--print_ins_log",
                   "--tb_path", "tb", "--mask_path", "masks.jsonl"]


def run_args(dataset, teacher_path, out, *extra):
    return ["--dataset_path", dataset, "--batch_size", "4", "--report_steps", "100", "--dropout", "0.0",
            *SHAPE, "--pretrained_model_path", teacher_path, "--output_model_path", out, "--learning_rate", "1e-6",
            "--scheduler", "constant_with_warmup", "--warmup", "0", *extra]


def plain_config(tmp_path):
    """The tiny teacher's plain BERT config (target [mlm, sp], processor bert), shape included, as a
    reference user would keep it beside the teacher."""
    with open(PLAIN_CONFIG) as f:
        cfg = json.load(f)
    cfg.update(hidden_size=48, emb_size=48, heads_num=4, feedforward_size=160, layers_num=2, max_seq_length=32)
    path = tmp_path / "teacher_config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def merge_script(*args):
    return subprocess.run([sys.executable, MERGE, *args], capture_output=True, text=True)


def test_reference_command_with_a_plain_config_trains_and_merges(teacher, tmp_path, capsys):
    """The reference README's command: plain teacher config, --target mlm, --data_processor mlm, WID flags."""
    dataset, teacher_path = teacher
    out = str(tmp_path / "wid.bin")
    # Defaults: 16 FFN stages, 8 attention stages every 2nd update -> the schedule ends at 16 * w_step.
    # lr_c x l2_lambda = 1 kills masked entries one step after masking, so step 17 merges.
    flags = ["--target_dim", "24", "--compactor_mask_strategy", "dim", "--w_step", "1"]
    config = plain_config(tmp_path)
    pretrain(run_args(dataset, teacher_path, out, "--config_path", config, "--target", "mlm",
                      "--data_processor", "mlm", "--total_steps", "17", "--compactor_learning_rate", "5e-4",
                      "--l2_lambda", "2000", "--print_ins_log", "--tb_path", str(tmp_path / "tb"), *flags))
    printed = capsys.readouterr().out
    assert "--target_dim --compactor_mask_strategy --w_step" in printed
    assert "with a plain BERT config: compressing it with WID (encoder -> wid_transformer" in printed
    assert "'target_hidden_size': 24" in printed and "'ffn_stages': 16" in printed
    assert "wid: mask update at step 16: hidden_size 24.0, attention_size 24.0, feedforward_size 80.0" in printed
    sd = load_state_dict_file(out)
    assert sd["embedding.compactor_out"].shape == (48, 48)
    assert sd["encoder.transformer.1.feed_forward.linear_1.compactor_out"].shape == (160, 160)
    assert int(sd["embedding.wid_mask.keep"].sum()) == 24
    assert not any(k.startswith("target.sp.") for k in sd)
    events = b"".join(open(os.path.join(tmp_path, "tb", f), "rb").read() for f in os.listdir(tmp_path / "tb"))
    assert b"wid/hidden_size" in events and b"wid/feedforward_size" in events  # --tb_path, with WID's widths
    log = [json.loads(line) for line in open(out + ".masks.jsonl")]
    assert max(r["step"] for r in log) == 16
    # The reference's merge: the teacher's config and the run's WID flags.
    run = merge_script("--load_model_path", out, "--config_path", config, "--output_model_path",
                       str(tmp_path / "student.bin"), *flags)
    assert run.returncode == 0, run.stderr
    assert "student: hidden 24, 4 heads, FFN 80, 2 layers" in run.stdout


def test_every_reference_flag_is_accepted(teacher, tmp_path):
    dataset, teacher_path = teacher
    job, args = prepare(run_args(dataset, teacher_path, str(tmp_path / "w.bin"), "--config_path", PLAIN_CONFIG,
                                 "--target", "mlm", "--data_processor", "mlm", *REFERENCE_FLAGS))
    cfg, w = job.model_cfg, job.model_cfg.wid
    assert (cfg.encoder, cfg.target, cfg.data_processor) == ("wid_transformer", ["wid_mlm"], "mlm")
    assert (w.target_hidden_size, w.target_feedforward_size, w.strategy, w.w_step, w.l2_lambda) == \
        (24, None, "dim", 1, 20.0)
    assert (w.compactor_learning_rate, w.compactors_only, w.print_updates, w.mask_path) == \
        (5e-5, True, True, "masks.jsonl")
    assert job.train_cfg.tensorboard_dir == "tb"


def test_a_wid_config_accepts_target_mlm_and_a_plain_one_drops_sp(teacher, tmp_path, capsys):
    dataset, teacher_path = teacher
    job, _ = prepare(run_args(dataset, teacher_path, str(tmp_path / "w.bin"), "--config_path", WID_CONFIG,
                              "--target", "mlm"))
    assert job.model_cfg.target == ["wid_mlm"] and job.model_cfg.wid.target_hidden_size == 24
    job, _ = prepare(run_args(dataset, teacher_path, str(tmp_path / "w.bin"), "--config_path", PLAIN_CONFIG,
                              "--data_processor", "mlm", "--target_dim", "24"))
    assert job.model_cfg.target == ["wid_mlm"]
    printed = capsys.readouterr().out
    assert "target mlm sp -> wid_mlm (a checkpoint's next-sentence head target.sp is ignored)" in printed


def test_plain_config_conversion_refusals(teacher, tmp_path):
    dataset, teacher_path = teacher
    base = run_args(dataset, teacher_path, str(tmp_path / "w.bin"), "--config_path", PLAIN_CONFIG,
                    "--data_processor", "mlm")
    with pytest.raises(UserError, match="--weight_squeeze turn WID on, which needs --target_dim"):
        prepare(base + ["--weight_squeeze"])
    with pytest.raises(UserError, match="must be mlm, got lm"):
        prepare(base + ["--target", "lm", "--target_dim", "24"])
    with pytest.raises(UserError, match="multiple of 4; 26 is not. Nearest reachable: 24 or 28"):
        prepare(base + ["--target_dim", "26"])


def test_comp_only_freezes_the_teacher_weights():
    _, model = build_pair(wid_dict(compactors_only=True))
    build_wid_plugin(model, model.cfg, None, log_path=None)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("compactor_in", "compactor_out")) for n in trainable)
    assert "embedding.compactor_out" in trainable


def test_pre_mask_l2_pulls_compactors_until_the_first_update():
    _, model = build_pair(wid_dict(pre_mask_l2=0.5, w_step=3))
    (cb,), _ = build_wid_plugin(model, model.cfg, None, log_path=None)
    lin = model.encoder.transformer[0].feed_forward.linear_1
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    cb.after_backward(None)
    assert torch.equal(lin.compactor_in.grad, 0.5 * lin.compactor_in.detach())
    assert torch.equal(lin.weight.grad, torch.zeros_like(lin.weight))  # teacher weights: no pull
    cb.last_update = 3
    lin.compactor_in.grad.zero_()
    cb.after_backward(None)
    assert torch.equal(lin.compactor_in.grad, torch.zeros_like(lin.compactor_in))


def test_scalars_report_the_kept_widths():
    _, model = build_pair(wid_dict())
    cb, _ = train(model, 5)
    assert cb.scalars() == {"wid/hidden_size": 24.0, "wid/attention_size": 24.0, "wid/feedforward_size": 64.0,
                            "wid/mlm_size": 24.0, "wid/live_masked": 288}


def test_decay_arithmetic():
    assert steps_to_die(1.0, 0.01, 1e-3) == 688  # 0.99^688 < 1e-3 <= 0.99^687
    assert 0.99 ** 688 < 1e-3 <= 0.99 ** 687
    assert steps_to_die(0.5, 0.0, 1e-3) == math.inf and steps_to_die(1e-4, 0.01, 1e-3) == 0
    wid = type("W", (), {"l2_lambda": 20.0})
    assert schedule_decay(wid, 10, 20, lambda s: 5e-4) == pytest.approx(0.99 ** 10)
    assert schedule_decay(wid, 10, 20, lambda s: 0.0) == 1.0


def test_merge_refuses_live_masked_entries_and_the_flag_merges(teacher, tmp_path):
    """Stopped right after the last mask update (step 4 of the tiny config with --w_step 1): refused with
    the numbers, nothing written; --allow_live_masked merges with a warning."""
    dataset, teacher_path = teacher
    out = str(tmp_path / "wid.bin")
    with pytest.warns(UserWarning, match=r"--total_steps 4 leaves 0 steps after the last WID mask update \(step 4\)"
                                         r".*factor 1 by the end.*0.99 per step\) they need 688 steps"):
        pretrain(run_args(dataset, teacher_path, out, "--config_path", WID_CONFIG, "--max_seq_length", "32",
                          "--total_steps", "4", "--w_step", "1", "--compactor_learning_rate", "5e-4",
                          "--l2_lambda", "20"))
    student = tmp_path / "student.bin"
    run = merge_script("--load_model_path", out, "--config_path", WID_CONFIG, "--output_model_path", str(student))
    assert run.returncode == 2, run.stderr
    msg = run.stderr
    # S 24 + M 24 + 2 x A 24 + 2 x F 96 masked, none decayed yet (the last ones were masked at step 4).
    assert "at step 4, 0 steps after the last mask update (step 4): 288 masked coordinates are not dead" in msg
    assert "(S 24, A.0 24, F.0 96, A.1 24, F.1 96, M 24)" in msg
    assert "largest remaining decay factor is 1 (dead below wid.zero_below = 0.001)" in msg
    assert "1 - 0.0005 x 20 per step, from wid.bin.state.pt) they need about 688 more steps" in msg
    assert "nothing was written. --allow_live_masked merges anyway" in msg
    assert not student.exists() and not (tmp_path / "student_config.json").exists()
    run = merge_script("--load_model_path", out, "--config_path", WID_CONFIG, "--output_model_path", str(student),
                       "--allow_live_masked")
    assert run.returncode == 0, run.stderr
    assert "merging anyway (--allow_live_masked)" in run.stderr and student.exists()


def test_a_run_long_enough_merges_without_the_flag(teacher, tmp_path):
    dataset, teacher_path = teacher
    out = str(tmp_path / "wid.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no end-of-schedule warning either
        pretrain(run_args(dataset, teacher_path, out, "--config_path", WID_CONFIG, "--max_seq_length", "32",
                          "--total_steps", "5", "--w_step", "1", "--compactor_learning_rate", "5e-4",
                          "--l2_lambda", "2000"))
    run = merge_script("--load_model_path", out, "--config_path", WID_CONFIG, "--output_model_path",
                       str(tmp_path / "student.bin"))
    assert run.returncode == 0, run.stderr
    assert "student: hidden 24, 4 heads, FFN 64" in run.stdout


@pytest.mark.parametrize("strategy,target,per_chunk", [("dim", 24, {6}), ("head", 24, {0, 12})])
def test_reference_importance_cuts_the_stream_in_head_chunks_and_merges(strategy, target, per_chunk):
    """`importance: reference`: S is cut like the attention width (6 of every 12 dims for dim, whole
    12-dim chunks for head), as the reference code does; the merge stays exact."""
    _, model = build_pair(wid_dict(target=target, strategy=strategy, importance="reference"))
    train(model, 5)
    s = model.embedding.wid_mask
    assert s.n_kept == 24 and set(s.keep.view(-1, 12).sum(1).tolist()) == per_chunk
    _, free = build_pair(wid_dict(target=target, strategy=strategy))
    train(free, 5)
    assert set(free.embedding.wid_mask.keep.view(-1, 12).sum(1).tolist()) != per_chunk  # the default: free
    zero_masked(model)
    sd, cfg = merge(model)
    student = build_model(load_model_config(None, cfg)).eval()
    load_model_weights(student, sd)
    b = batch(seed=5)
    assert torch.allclose(logits(student, b), logits(model, b), atol=1e-5, rtol=0)
