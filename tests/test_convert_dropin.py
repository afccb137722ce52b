"""TencentPretrain users' conversion commands: the converters' --layers_num/--type, the config found beside
(or inferred from) a checkpoint, TencentPretrain-LayerNorm export, and the pickled dataset.pt reader."""
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.convert.hf_bert import tencentpretrain_to_hf
from tencentpretrain.convert.hf_files import export_main, import_main
from tencentpretrain.convert.tp_dataset import write_tencentpretrain_dataset
from tencentpretrain.data.dataset import Dataset
from tencentpretrain.data.loader import DataLoader
from tencentpretrain.errors import run_cli
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_state_dict_file, save_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
V = 40


def cli(main, argv, capsys):
    """Run a CLI in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def our_checkpoint(path, hidden=32, heads=4, target=("mlm", "sp"), layernorm="normal_torch", config=True):
    """A perturbed tiny BERT of ours at `path` (+ `<stem>_config.json` beside it when `config`)."""
    cfg = load_model_config(None, dict(emb_size=hidden, hidden_size=hidden, feedforward_size=2 * hidden,
                                       heads_num=heads, layers_num=2, max_seq_length=16, vocab_size=V, dropout=0.0,
                                       layernorm=layernorm, target=list(target), tie_weights=True))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape))
    save_state_dict(model.state_dict(), str(path))
    if config:
        cfg.save(re.sub(r"\.bin$", "", str(path)) + "_config.json")
    return model, cfg


def hf_folder(tmp_path, target=("mlm", "sp")):
    """A Hugging Face BERT folder (pytorch_model.bin + config.json), made from one of ours."""
    model, cfg = our_checkpoint(tmp_path / "src.bin", target=target)
    hf_sd, hf_cfg, _ = tencentpretrain_to_hf(model.state_dict(), cfg)
    folder = tmp_path / "hf_in"
    folder.mkdir()
    torch.save(hf_sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(hf_cfg))
    return folder


# ---- checkpoints ------------------------------------------------------------------------------
def test_import_takes_tencentpretrain_layers_num_and_type(tmp_path, capsys):
    folder = hf_folder(tmp_path)
    out = tmp_path / "bert.bin"
    code, _, err = cli(import_main, ["--input_model_path", folder, "--output_model_path", out,
                                     "--layers_num", 2, "--type", "bert"], capsys)
    assert code == 0, err
    keys = load_state_dict_file(str(out)).keys()
    assert {"target.sp.linear_1.weight", "target.sp.linear_2.weight", "target.mlm.linear_1.weight"} <= keys
    assert json.loads((tmp_path / "bert_config.json").read_text())["target"] == ["mlm", "sp"]

    code, _, err = cli(import_main, ["--input_model_path", folder, "--output_model_path", tmp_path / "mlm.bin",
                                     "--type", "mlm"], capsys)
    keys = load_state_dict_file(str(tmp_path / "mlm.bin")).keys()
    assert code == 0 and not any(k.startswith("target.sp.") for k in keys) and "target.mlm.linear_1.weight" in keys
    assert json.loads((tmp_path / "mlm_config.json").read_text())["target"] == ["mlm"]

    # The very command of the issue, as a script: refused, with what to use instead, nothing written.
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, "convert_bert_from_huggingface_to_tencentpretrain.py"),
                           "--input_model_path", str(folder), "--output_model_path", str(tmp_path / "x.bin"),
                           "--layers_num", "12", "--type", "bert"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--layers_num 12, but" in proc.stderr and "has 2 transformer layers" in proc.stderr
    assert "pass --layers_num 2" in proc.stderr and not (tmp_path / "x.bin").exists()


def test_import_type_bert_needs_the_next_sentence_head(tmp_path, capsys):
    folder = hf_folder(tmp_path, target=("mlm",))
    code, _, err = cli(import_main, ["--input_model_path", folder, "--output_model_path", tmp_path / "o.bin",
                                     "--type", "bert"], capsys)
    assert code == 2 and "no next-sentence head" in err and "use --type mlm" in err
    assert not (tmp_path / "o.bin").exists()
    code, _, err = cli(import_main, ["--input_model_path", folder, "--output_model_path", tmp_path / "o.bin",
                                     "--type", "mlm", "--target", "mlm"], capsys)
    assert code == 2 and "not allowed with argument" in err


def test_export_takes_tencentpretrain_layers_num_and_type(tmp_path, capsys):
    our_checkpoint(tmp_path / "m.bin")
    base = ["--input_model_path", tmp_path / "m.bin", "--config_path", tmp_path / "m_config.json"]
    code, _, err = cli(export_main, base + ["--output_model_path", tmp_path / "mlm.bin", "--layers_num", 2,
                                            "--type", "mlm"], capsys)
    keys = load_state_dict_file(str(tmp_path / "mlm.bin")).keys()
    assert code == 0 and "cls.predictions.transform.dense.weight" in keys
    assert not any(k.startswith(("cls.seq_relationship", "bert.pooler")) for k in keys)
    code, _, _ = cli(export_main, base + ["--output_model_path", tmp_path / "pt", "--type", "bert"], capsys)
    hf_cfg = json.loads((tmp_path / "pt" / "config.json").read_text())
    assert code == 0 and hf_cfg["architectures"] == ["BertForPreTraining"]
    code, _, err = cli(export_main, base + ["--output_model_path", tmp_path / "x", "--layers_num", 12], capsys)
    assert code == 2 and "--layers_num 12, but" in err and "2 transformer layers" in err
    assert not (tmp_path / "x").exists()
    our_checkpoint(tmp_path / "only_mlm.bin", target=("mlm",))
    code, _, err = cli(export_main, ["--input_model_path", tmp_path / "only_mlm.bin", "--output_model_path",
                                     tmp_path / "y", "--type", "bert"], capsys)
    assert code == 2 and "no target.sp.*" in err and "use --type mlm" in err


def test_export_finds_the_config_beside_a_step_checkpoint(tmp_path, capsys):
    # pretrain.py writes <output_model_path>-<step>; heads_num 4 at hidden 32 cannot be inferred, so the
    # exported config proves the file beside the checkpoint was read.
    model, _ = our_checkpoint(tmp_path / "run.bin", hidden=32, heads=4)
    os.replace(tmp_path / "run.bin", tmp_path / "run.bin-100")
    code, out, err = cli(export_main, ["--input_model_path", tmp_path / "run.bin-100",
                                       "--output_model_path", tmp_path / "hf"], capsys)
    assert code == 0, err
    assert f"config: {tmp_path / 'run_config.json'} (found beside the checkpoint)" in out
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_cfg["num_attention_heads"] == 4 and hf_cfg["hidden_size"] == 32
    os.remove(tmp_path / "run_config.json")
    code, _, err = cli(export_main, ["--input_model_path", tmp_path / "run.bin-100",
                                     "--output_model_path", tmp_path / "hf2"], capsys)
    assert code == 2 and "pass --config_path" in err
    assert f"tried {tmp_path / 'run.bin-100_config.json'}, {tmp_path / 'run_config.json'}" in err


def test_export_without_config_infers_it_like_tencentpretrain(tmp_path, capsys):
    """TencentPretrain's workflow: weights only, TencentPretrain's LayerNorm, no config anywhere."""
    model, _ = our_checkpoint(tmp_path / "tp.bin-5", hidden=64, heads=1, target=("mlm",), layernorm="normal",
                              config=False)
    code, out, err = cli(export_main, ["--input_model_path", tmp_path / "tp.bin-5", "--output_model_path",
                                       tmp_path / "hf", "--layers_num", 2, "--type", "mlm"], capsys)
    assert code == 0, err
    assert "inferred from the weights: hidden_size 64" in out and "assumed heads_num 1" in out
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (hf_cfg["num_hidden_layers"], hf_cfg["intermediate_size"], hf_cfg["vocab_size"]) == (2, 128, V)
    m = re.search(r"layernorm deviation: max abs difference (\S+) in the last hidden states .*, (\S+) in the MLM "
                  r"logits", out)
    printed = float(m.group(2))
    assert 0 < float(m.group(1)) < 1e-3 and 0 < printed < 1e-3
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    hf = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
    g = torch.Generator().manual_seed(3)
    src = torch.randint(1, V, (3, 12), generator=g)
    seg = torch.ones(3, 12, dtype=torch.long)
    seg[:, 6:] = 2
    with torch.no_grad():
        ours = model.target.mlm.logits(model.encode(src, seg))
        actual = (hf(input_ids=src, token_type_ids=(seg == 2).long()).logits - ours).abs().max().item()
    assert printed / 10 < actual < 10 * printed


def test_old_to_new_takes_tencentpretrains_config_path_and_checks_it(tmp_path, capsys):
    from tencentpretrain.convert.uer_old import old_to_new_main
    model, _ = our_checkpoint(tmp_path / "m.bin")
    old = {k.replace("embedding.word.embedding.", "embedding.word_embedding."): v
           for k, v in model.state_dict().items()}
    torch.save(old, tmp_path / "old.bin")
    args = ["--input_model_path", tmp_path / "old.bin", "--output_model_path", tmp_path / "new.bin"]
    code, _, err = cli(old_to_new_main, args + ["--config_path", tmp_path / "m_config.json"], capsys)
    assert code == 0, err
    assert "embedding.word.embedding.weight" in load_state_dict_file(str(tmp_path / "new.bin"))
    os.remove(tmp_path / "new.bin")
    code, _, err = cli(old_to_new_main, args + ["--config_path", "models/bert/base_config.json"], capsys)
    assert code == 2 and "says layers_num 12, but" in err and "has 2 transformer layers" in err
    assert not (tmp_path / "new.bin").exists()


# ---- TencentPretrain's dataset.pt -------------------------------------------------------------
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(15)] + ["##s", "##ed"]
PAD, CLS, SEP, MASK = 0, 2, 3, 4


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TOKENS) + "\n")
    return path


def convert(tmp_path, capsys, vocab, instances, processor, *extra, parts=1):
    """Write `instances` as TencentPretrain does (per-worker files, concatenated) and convert them."""
    chunks = [instances[i::parts] for i in range(parts)] if parts > 1 else [instances]
    (tmp_path / "dataset.pt").write_bytes(b"".join(write_tencentpretrain_dataset(c) for c in chunks))
    return cli(dataset_main(),
               ["--input_path", tmp_path / "dataset.pt", "--output_path", tmp_path / "dataset.tpd",
                "--data_processor", processor, "--vocab_path", vocab, *extra], capsys)


def dataset_main():
    """scripts/convert_dataset_from_tencentpretrain.py's main, imported from its file."""
    spec = importlib.util.spec_from_file_location("convert_dataset_script",
                                                  os.path.join(SCRIPTS, "convert_dataset_from_tencentpretrain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_bert_static_dataset_gives_tencentpretrains_batches(tmp_path, capsys, vocab):
    instances = [  # ((src, pad_num), tgt_mlm, is_random_next, seg_pos), seq_length 10
        (([CLS, 5, MASK, SEP, 7, 8, SEP], 3), [(2, 6), (5, 9)], 0, [4, 7]),
        (([CLS, 10, SEP, 11, 12, MASK, 14, 15, 16, SEP], 0), [(5, 13)], 1, [3, 10]),
        (([CLS, 17, 18, SEP, MASK, SEP], 4), [(4, 19)], 1, [4, 6]),
    ]
    code, out, err = convert(tmp_path, capsys, vocab, instances, "bert", parts=2)  # worker 0: 0, 2; worker 1: 1
    assert code == 0, err
    assert "converted 3 instances (23 tokens, seq_length 10, static masking" in out
    loader = DataLoader(str(tmp_path / "dataset.tpd"), batch_size=3, shuffle=False, pad_to_seq_length=True)
    assert loader.header.processor == "bert" and loader.header.seq_length == 10
    batch = loader.collate(range(3))
    order = [0, 2, 1]  # the merged file holds worker 0's instances, then worker 1's
    for row, i in enumerate(order):
        (src, pad), tgt, is_next, seg_pos = instances[i]
        # What TencentPretrain's BertDataloader builds from the same instance (0 = no target there).
        want_tgt = [0] * (len(src) + pad)
        for p, t in tgt:
            want_tgt[p] = t
        want_seg = [1] * seg_pos[0] + [2] * (seg_pos[1] - seg_pos[0]) + [0] * pad
        assert batch["src"][row].tolist() == src + [PAD] * pad
        assert batch["seg"][row].tolist() == want_seg
        assert [max(t, 0) for t in batch["tgt_mlm"][row].tolist()] == want_tgt
        assert batch["tgt_sp"][row].item() == is_next


def test_bert_dynamic_and_mlm_datasets(tmp_path, capsys, vocab):
    bert = [(([CLS, 5, 6, SEP, 7, SEP], 2), 1, [4, 6]), (([CLS, 8, SEP, 9, 10, 11, SEP], 1), 0, [3, 7])]
    code, out, err = convert(tmp_path, capsys, vocab, bert, "bert", "--whole_word_masking")
    ds = Dataset(str(tmp_path / "dataset.tpd"))
    assert code == 0 and ds.header.dynamic_masking and ds.header.whole_word_masking
    assert ds.arrays["is_continuation"].tolist() == [0] * 20 + [1, 1]
    assert ds[1]["tokens"].tolist() == bert[1][0][0] and ds[1]["seg_split"] == 3 and ds[0]["is_random_next"] == 1

    mlm = [(([CLS, 5, MASK, 7, SEP, CLS, 8, 9], 0), [(2, 6)], [8]), (([MASK, 11, SEP], 5), [(0, 10)], [3])]
    code, out, err = convert(tmp_path, capsys, vocab, mlm, "mlm")
    ds = Dataset(str(tmp_path / "dataset.tpd"))
    assert code == 0 and not ds.header.dynamic_masking and ds.header.processor == "mlm"
    assert ds[1]["tokens"].tolist() == [MASK, 11, SEP] and ds[1]["mlm_positions"].tolist() == [0]
    assert ds[1]["mlm_targets"].tolist() == [10] and ds[0]["mlm_targets"].tolist() == [6]
    batch = DataLoader(str(tmp_path / "dataset.tpd"), batch_size=2, shuffle=False).collate(range(2))
    assert batch["seg"].tolist() == [[1] * 8, [1] * 3 + [0] * 5] and "tgt_sp" not in batch

    mlm_dynamic = [(([CLS, 5, 6, 7], 0), [4]), (([8, SEP], 2), [2])]
    code, out, err = convert(tmp_path, capsys, vocab, mlm_dynamic, "mlm")
    ds = Dataset(str(tmp_path / "dataset.tpd"))
    assert code == 0 and ds.header.dynamic_masking and ds[1]["tokens"].tolist() == [8, SEP]


class RunsCode:
    """What a malicious dataset.pt could hold: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_run(tmp_path, capsys, vocab):
    marker = tmp_path / "was_run"
    good = (([CLS, 5, SEP, 6, SEP], 0), 0, [3, 5])
    code, out, err = convert(tmp_path, capsys, vocab, [good, RunsCode(marker)], "bert")
    assert code == 2 and "refused instance 1" in err and "system" in err and "nothing in it was run" in err
    assert not marker.exists() and not (tmp_path / "dataset.tpd").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".convert-")] == []
    # The same file through plain pickle would have run it: the test's payload is real.
    with open(tmp_path / "dataset.pt", "rb") as f:
        pickle.load(f)
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("instances, processor, message", [
    ([(([CLS, 5, SEP, 6, SEP], 0), 0, [3, 5])], "mlm",
     "it looks like bert with dynamic masking: pass --data_processor bert"),
    ([(([CLS, 5, SEP, 6, SEP], 0), 0.5, [3, 5])], "bert", "is_random_next is not 0 or 1"),
    ([{"src": [CLS, 5]}], "bert", "expected a tuple ((src, pad_num), ...), got dict"),
    ([(([CLS, 5, SEP, 99, SEP], 0), 0, [3, 5])], "bert", "token id 99 is outside the vocabulary (size 22)"),
    ([(([7, 5, SEP, 6, SEP], 0), 0, [3, 5])], "bert", "starts with id 7, but [CLS] is 2"),
    ([(([CLS, 5, SEP, 6, SEP], 0), 0, [3, 5]), (([CLS, 5, SEP, 6, SEP], 3), 0, [3, 5])], "bert",
     "instance 1: its length with padding is 8 but instance 0's is 5"),
    ([(([CLS, 5, 6], 0), [(3, 7)], [3])], "mlm", "a masked position lies outside src"),
])
def test_bad_instances_are_refused_with_where_and_why(tmp_path, capsys, vocab, instances, processor, message):
    code, out, err = convert(tmp_path, capsys, vocab, instances, processor)
    assert code == 2 and message in err and "nothing written" in err
    assert not (tmp_path / "dataset.tpd").exists()


def test_truncated_and_foreign_files(tmp_path, capsys, vocab):
    data = write_tencentpretrain_dataset([(([CLS, 5, SEP, 6, SEP], 0), 0, [3, 5])] * 2)
    (tmp_path / "cut.pt").write_bytes(data[:-3])
    main = dataset_main()
    args = ["--output_path", tmp_path / "o.tpd", "--data_processor", "bert", "--vocab_path", vocab]
    code, _, err = cli(main, ["--input_path", tmp_path / "cut.pt", *args], capsys)
    assert code == 2 and "truncated in instance 1" in err
    (tmp_path / "text.pt").write_bytes(b"not a pickle at all\n")
    code, _, err = cli(main, ["--input_path", tmp_path / "text.pt", *args], capsys)
    assert code == 2 and "instance 0 (byte 0) is not a readable pickle" in err
    torch.save({"w": torch.zeros(2)}, tmp_path / "torch.pt")
    code, _, err = cli(main, ["--input_path", tmp_path / "torch.pt", *args], capsys)
    assert code == 2 and "error:" in err and not (tmp_path / "o.tpd").exists()
