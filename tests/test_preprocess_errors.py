"""Bad inputs to preprocessing give a UserError saying what and where; the CLI exits 2 with `error:`."""
import os
import re
import subprocess
import sys

import pytest

from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tmp_path, corpus_text=None, corpus_bytes=None, **kw):
    corpus = tmp_path / "c.txt"
    if corpus_bytes is not None:
        corpus.write_bytes(corpus_bytes)
    elif corpus_text is not None:
        corpus.write_text(corpus_text, encoding="utf-8")
    kw.setdefault("data_processor", "mlm")
    preprocess(PreprocessOptions(str(corpus), str(tmp_path / "out.tpd"), **kw), log=open(os.devnull, "w"))


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(UserError, match="corpus not found: .*c.txt"):
        run(tmp_path)
    with pytest.raises(UserError, match="is empty"):
        run(tmp_path, "")
    for proc in ("mlm", "bert", "lm"):
        with pytest.raises(UserError, match="yields no instance"):
            run(tmp_path, "\n  \n\t\n\n", data_processor=proc)
    assert sorted(os.listdir(tmp_path)) == ["c.txt"]  # no dataset, no temp files


def test_non_utf8_names_file_and_line(tmp_path):
    text = "good line one\nsecond line\n".encode() + b"caf\xe9 au lait\n" + b"last\n"
    for procs in (1, 2):
        with pytest.raises(UserError, match=r"c.txt, line 3: not valid UTF-8 \(byte 0xe9 at column 4\)"):
            run(tmp_path, corpus_bytes=text * 1, processes_num=procs, block_bytes=16)
    assert not (tmp_path / "out.tpd").exists()


def test_vocab_problems(tmp_path):
    with pytest.raises(UserError, match="vocab file not found: .*nope.txt"):
        run(tmp_path, "hello world\n", vocab_path=str(tmp_path / "nope.txt"))
    (tmp_path / "v.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")  # no [MASK]
    with pytest.raises(UserError, match=r"no mask token '\[MASK\]'"):
        run(tmp_path, "hello world\n", vocab_path=str(tmp_path / "v.txt"))
    with pytest.raises(UserError, match="SentencePiece model not found"):
        run(tmp_path, "hello world\n", spm_model_path=str(tmp_path / "sp.model"))


def test_bad_options(tmp_path):
    with pytest.raises(UserError, match="--seq_length 4 is too small for the 'bert' processor"):
        run(tmp_path, "a b\n", data_processor="bert", seq_length=4)
    with pytest.raises(UserError, match="--seq_length 2 is too small for the 'mlm'"):
        run(tmp_path, "a b\n", seq_length=2)
    with pytest.raises(UserError, match="short_seq_prob"):
        run(tmp_path, "a b\n", short_seq_prob=1.5)
    with pytest.raises(UserError, match="unknown --data_processor 'gpt'"):
        run(tmp_path, "a b\n", data_processor="gpt")


def test_cli_exit_code_and_message(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"fine\n\xff\xfe broken\n")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "preprocess.py"), "--corpus_path", "c.txt",
                          "--dataset_path", "d.tpd"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: c.txt, line 2: not valid UTF-8")
    assert not (tmp_path / "d.tpd").exists()


def test_cli_writes_dataset_and_summary(tmp_path):
    (tmp_path / "c.txt").write_text("The whale .\nCall me Ishmael .\n\nSome years ago .\nNever mind .\n")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "preprocess.py"), "--corpus_path", "c.txt",
                          "--dataset_path", "sub/d.tpd", "--data_processor", "bert", "--dup_factor", "2",
                          "--processes_num", "2", "--do_lower_case", "false"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    m = re.search(r"preprocess: wrote (\d+) instances \((\d+) tokens\) from 5 lines .* lines/s", out.stderr)
    from tencentpretrain.data.dataset import read_header
    h = read_header(str(tmp_path / "sub" / "d.tpd"))
    assert m and h.instances_num == int(m[1]) >= 4 and h.tokens_num == int(m[2]) and h.dup_factor == 2 and h.do_lower_case is False and h.corpus["lines"] == 5
