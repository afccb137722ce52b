"""pretrain.py end to end on a tiny vocabulary, corpus and model: saving, resume, DDP, checks."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.errors import UserError
from tencentpretrain.training.pretrain import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "the cat sat on a mat while dog ran far away from big small red blue green house tree".split()
TINY = ["--config_path", os.path.join(ROOT, "models", "bert", "tiny_config.json"), "--hidden_size", "32",
        "--emb_size", "32", "--feedforward_size", "64", "--heads_num", "2", "--layers_num", "1",
        "--max_seq_length", "32", "--dropout", "0.1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(rng.integers(2, 5)))
            for _ in range(30)]
    (d / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    paths = {"vocab": str(d / "vocab.txt")}
    for proc in ("bert", "mlm"):
        paths[proc] = str(d / f"{proc}.tpd")
        preprocess(PreprocessOptions(str(d / "corpus.txt"), paths[proc], data_processor=proc,
                                     vocab_path=paths["vocab"], seq_length=32, dynamic_masking=True),
                   log=open(os.devnull, "w"))
    return paths


def args(data, out, *extra, dataset="bert"):
    return ["--dataset_path", data[dataset], "--vocab_path", data["vocab"], "--output_model_path", str(out),
            "--batch_size", "4", "--learning_rate", "1e-3", "--report_steps", "2", *TINY, *extra]


def test_pretrain_saves_checkpoints_with_tencentpretrain_keys(data, tmp_path, capsys):
    out = tmp_path / "m.bin"
    main(args(data, out, "--total_steps", "4", "--save_checkpoint_steps", "2"))
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.bin-2", "m.bin-2.state.pt", "m.bin-4", "m.bin-4.state.pt",
                                            "m.bin.state.pt", "m_config.json"]
    assert os.readlink(out) == "m.bin-4" and os.readlink(str(out) + ".state.pt") == "m.bin-4.state.pt"
    sd = torch.load(out, weights_only=True)
    for key in ("embedding.word.embedding.weight", "encoder.transformer.0.self_attn.linear_layers.0.weight",
                "target.mlm.linear_1.weight", "target.sp.linear_2.bias"):
        assert key in sd
    assert sd["embedding.word.embedding.weight"].shape == (5 + len(WORDS), 32)
    logs = capsys.readouterr().out
    assert "| step 2/4 | loss " in logs and "mlm_acc" in logs and "sp_acc" in logs and "tokens/s" in logs
    assert "done: 4 steps" in logs
    recorded = json.load(open(tmp_path / "m_config.json"))  # beside the weights, for converters and inference
    assert recorded["hidden_size"] == 32 and recorded["target"] == ["mlm", "sp"]


def test_pretrain_never_rewrites_config_path_as_its_recorded_config(data, tmp_path, capsys):
    cfg = tmp_path / "base_config.json"
    cfg.write_text(json.dumps({"hidden_size": 32, "layers_num": 1, "heads_num": 2, "feedforward_size": 64}))
    before = cfg.read_text()
    main(args(data, tmp_path / "base.bin", "--config_path", str(cfg), "--total_steps", "1"))
    assert cfg.read_text() == before and (tmp_path / "base.bin").exists()
    assert "is --config_path, so it is left as it is" in capsys.readouterr().out


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(data, tmp_path, capsys):
    full = tmp_path / "full" / "m.bin"
    main(args(data, full, "--total_steps", "4", "--save_checkpoint_steps", "2", "--accumulation_steps", "2"))
    cut = tmp_path / "cut" / "m.bin"
    main(args(data, cut, "--total_steps", "4", "--save_checkpoint_steps", "2", "--accumulation_steps", "2"))
    for name in (cut, f"{cut}-4"):  # as if killed after step 2's checkpoint
        os.remove(name), os.remove(f"{name}.state.pt")
    main(args(data, cut, "--total_steps", "4", "--save_checkpoint_steps", "2", "--accumulation_steps", "2",
              "--resume"))
    logs = capsys.readouterr().out
    assert f"resumed from {cut}-2 at step 2" in logs and "steps 3..4" in logs and "done: 2 steps" in logs
    a, b = torch.load(full, weights_only=True), torch.load(cut, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_starts_fresh(data, tmp_path, capsys):
    main(args(data, tmp_path / "m.bin", "--total_steps", "1", "--resume"))
    assert "no checkpoint" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "m.bin")


def test_pretrained_model_path_loads_weights(data, tmp_path):
    first = tmp_path / "a.bin"
    main(args(data, first, "--total_steps", "2"))
    second = tmp_path / "b.bin"
    main(args(data, second, "--total_steps", "1", "--pretrained_model_path", str(first), "--learning_rate", "0"))
    a, b = torch.load(first, weights_only=True), torch.load(second, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the loaded weights come out unchanged
    with pytest.raises(UserError, match="shape mismatches"):
        main(args(data, tmp_path / "c.bin", "--total_steps", "1", "--pretrained_model_path", str(first),
                  "--hidden_size", "16", "--emb_size", "16", "--feedforward_size", "32"))


def test_dataset_must_fit_the_model(data, tmp_path):
    with pytest.raises(UserError, match="'mlm' processor but the model expects data_processor 'bert'"):
        main(args(data, tmp_path / "m.bin", dataset="mlm"))
    with pytest.raises(UserError, match=r"has targets for \['mlm'\] but the model config asks for \['mlm', 'sp'\]"):
        _targets_mismatch(data, tmp_path)
    with pytest.raises(UserError, match="vocabulary of 24 tokens .* vocab_size 30522"):
        main([a for a in args(data, tmp_path / "m.bin") if a != data["vocab"] and a != "--vocab_path"])
    with pytest.raises(UserError, match="max_seq_length is 16"):
        main(args(data, tmp_path / "m.bin", "--max_seq_length", "16"))


def _targets_mismatch(data, tmp_path):
    # a config that expects the mlm processor but still asks for the next-sentence target
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"data_processor": "mlm", "target": ["mlm", "sp"], "emb_size": 32, "hidden_size": 32, '
                   '"feedforward_size": 64, "heads_num": 2, "layers_num": 1, "max_seq_length": 32}')
    main(["--dataset_path", data["mlm"], "--vocab_path", data["vocab"], "--output_model_path",
          str(tmp_path / "m.bin"), "--config_path", str(cfg)])


def test_precision_flags_are_checked(data, tmp_path):
    with pytest.raises(UserError, match="--bf16 and --fp16 exclude each other"):
        main(args(data, tmp_path / "m.bin", "--bf16", "--fp16"))
    # through the real CLI: clear message on stderr, exit status 2
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pretrain.py"), *args(data, tmp_path / "m.bin", "--fp16")],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 2 and "error: --fp16 needs a CUDA GPU" in proc.stderr


def test_bf16_run_on_cpu(data, tmp_path):
    main(args(data, tmp_path / "m.bin", "--total_steps", "2", "--bf16"))
    sd = torch.load(tmp_path / "m.bin", weights_only=True)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in sd.values())


def test_world_size_2_spawns_two_cpu_processes(data, tmp_path, capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "m.bin"
    main(args(data, out, "--total_steps", "2", "--world_size", "2", "--gpu_ranks", "0", "1",
              "--master_ip", f"tcp://127.0.0.1:{port}"))
    logs = capfd.readouterr().out
    assert "2 processes (gloo) on cpu" in logs and logs.count("| step 2/2") == 1
    state = torch.load(str(out) + ".state.pt", weights_only=True)
    assert state["world_size"] == 2 and [r["loader"]["position"] for r in state["ranks"]] == [16, 16]
    assert not any(k.startswith("module.") for k in torch.load(out, weights_only=True))
