"""Issue item 8 end to end on tiny configs: preprocess the shipped corpus, pretrain a tiny teacher,
WID-pretrain it through the whole schedule, merge, load the student the ordinary way, and compare
its MLM predictions with the compacted model's on the same batch."""
import json
import os

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights
from tencentpretrain.training.pretrain import main as pretrain
from tencentpretrain.wid.merge import merge_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WID_CONFIG = os.path.join(ROOT, "models", "wid", "tiny_48x4_to_24_dim.json")
SHAPE = ["--hidden_size", "48", "--emb_size", "48", "--heads_num", "4", "--feedforward_size", "160",
         "--layers_num", "2", "--max_seq_length", "32"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(mlm dataset from the shipped corpus, a tiny teacher pretrained on it for 3 steps)."""
    tmp_path = tmp_path_factory.mktemp("wid_e2e")
    corpus = tmp_path / "corpus.txt"
    with open(os.path.join(ROOT, "corpora", "moby_dick.txt"), encoding="utf-8") as f:
        corpus.write_text("".join(f.readlines()[:400]), encoding="utf-8")
    dataset = str(tmp_path / "mlm.tpd")
    preprocess(PreprocessOptions(str(corpus), dataset, data_processor="mlm", seq_length=32, dynamic_masking=True),
               log=open(os.devnull, "w"))
    common = ["--dataset_path", dataset, "--batch_size", "4", "--report_steps", "100", "--dropout", "0.0"]
    teacher, teacher_config = str(tmp_path / "teacher.bin"), tmp_path / "teacher_config.json"
    with open(os.path.join(ROOT, "models", "bert", "tiny_config.json")) as f:
        teacher_config.write_text(json.dumps(dict(json.load(f), target=["mlm"], data_processor="mlm")))
    pretrain(common + ["--config_path", str(teacher_config), *SHAPE, "--output_model_path", teacher,
                       "--total_steps", "3", "--learning_rate", "1e-3"])
    return dataset, teacher


def wid_args(dataset, teacher, out, *extra):
    # The tiny config's schedule with --w_step 1 ends at step 4. A pull rate lr_c * l2_lambda = 1
    # zeroes masked entries one step after masking (a real run takes thousands of steps for this).
    return ["--dataset_path", dataset, "--batch_size", "4", "--report_steps", "100", "--dropout", "0.0",
            "--config_path", WID_CONFIG, "--max_seq_length", "32", "--pretrained_model_path", teacher,
            "--output_model_path", out, "--total_steps", "6", "--learning_rate", "1e-6",
            "--w_step", "1", "--compactor_learning_rate", "5e-4", "--l2_lambda", "2000",
            "--scheduler", "constant_with_warmup", "--warmup", "0", *extra]


def test_compress_merge_and_load_student(teacher, tmp_path):
    dataset, teacher = teacher
    wid_config = WID_CONFIG
    compacted = str(tmp_path / "wid.bin")
    pretrain(wid_args(dataset, teacher, compacted))
    log = [json.loads(l) for l in open(compacted + ".masks.jsonl")]
    assert {l["step"] for l in log} == {1, 2, 3, 4}
    assert {l["group"]: l["kept"] for l in log if l["step"] == 4}["F.1"] == 64

    student = str(tmp_path / "student.bin")
    config_path, cfg = merge_checkpoint(compacted, wid_config, student, wid_args={})
    assert (cfg["hidden_size"], cfg["heads_num"], cfg["feedforward_size"]) == (24, 4, 64)

    wid_cfg = load_model_config(wid_config, {"max_seq_length": 32, "vocab_size": 30522, "dropout": 0.0})
    wid_model = build_model(wid_cfg).eval()
    load_model_weights(wid_model, compacted)
    student_model = build_model(load_model_config(config_path)).eval()
    load_model_weights(student_model, student)  # the ordinary BERT path, strict
    from tencentpretrain.data.loader import build_loader
    batch = next(iter(build_loader(dataset, 8, 0, 1, 0)))
    keep = batch["tgt_mlm"] != -100
    with torch.no_grad():
        a = wid_model.target.mlm.logits(wid_model.encode(batch["src"], batch["seg"])[keep])
        b = student_model.target.mlm.logits(student_model.encode(batch["src"], batch["seg"])[keep])
    assert keep.sum() > 0
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert torch.allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_data_parallel_wid_run_merges(teacher, tmp_path):
    """Two CPU processes (gloo): masks are broadcast from rank 0, the result merges exactly."""
    import socket
    dataset, teacher = teacher
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    compacted = str(tmp_path / "wid.bin")
    pretrain(wid_args(dataset, teacher, compacted, "--world_size", "2", "--gpu_ranks", "0", "1",
                      "--master_ip", f"tcp://localhost:{port}", "--accumulation_steps", "2"))
    _, cfg = merge_checkpoint(compacted, WID_CONFIG, str(tmp_path / "student.bin"), wid_args={})
    assert (cfg["hidden_size"], cfg["feedforward_size"]) == (24, 64)
