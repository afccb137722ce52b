"""The documentation cannot drift from the code.

1. Every fenced shell or Python block of README.md and docs/*.md is marked, on its opening fence:
   ```bash runnable          run by this test (in order, page by page, in one temporary folder per page)
   ```bash runnable slow     run only by `python -m pytest -m slow tests/test_docs.py`
   ```bash not-runnable      not run; the block's first line says why, as `# not run by the docs test: <reason>`
   The runnable blocks are scaled down by SUBSTITUTIONS (GPU- and corpus-sized numbers become tiny ones)
   and run on the small copies of the shipped data that `page_dir` makes; see docs/developer.md.
2. Every command-line script's --help names its guide page (`Guide: docs/<page>.md`), and that page exists.
"""
import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
SHELL = ("bash", "sh", "shell")
NOT_RUN = re.compile(r"# not run by the docs test: \S")
BLOCK_TIMEOUT_S = 240

# (pattern, replacement, why). Applied in this order to the text of every runnable block.
SUBSTITUTIONS = [
    (r"models/bert/(?:mini|small|medium|base|large)_config\.json", "models/bert/tiny_config.json",
     "BERT-sized configs become the 2-layer, hidden-128 one"),
    (r"--total_steps (\d{3,})\b", lambda m: f"--total_steps {min(8, max(2, int(m.group(1)) // 500))}",
     "pre-training runs of 100 steps or more take n // 500 steps, at least 2 and at most 8 (2000 -> 4, "
     "3000 -> 6: a resumed run still trains further)"),
    (r"\.bin-(\d{3,})\b", lambda m: f".bin-{min(8, max(2, int(m.group(1)) // 500))}",
     "step checkpoints named in a command follow --total_steps (model.bin-5000 -> model.bin-8)"),
    (r"--save_checkpoint_steps \d{2,}\b", "--save_checkpoint_steps 2", "so that step checkpoints still appear"),
    (r"--report_steps \d{2,}\b", "--report_steps 1", "so that progress lines still appear"),
    (r"--batch_size \d{2,}\b", "--batch_size 4", "batches of 10 or more become 4"),
    (r"--epochs_num \d+\b", "--epochs_num 1", "fine-tuning runs one epoch"),
    (r"--processes_num \d+\b", "--processes_num 1", "one worker (the output is the same for any number)"),
    (r"\bglue_data\b", "datasets/samples/glue", "GLUE's download folder becomes the shipped samples (same layout)"),
    (r"\b(?:train|dev)-v1\.1\.json\b", "datasets/samples/squad/tiny-v1.1.json", "SQuAD v1.1 becomes the sample"),
    (r"\bdev-v2\.0\.json\b", "datasets/samples/squad/tiny-v2.0.json", "SQuAD v2.0 becomes the sample"),
]
# Files the runnable blocks read, made small in each page's folder: path -> lines kept (header included).
SHRUNK = {"corpora/moby_dick.txt": 120, "datasets/sentiment/train.tsv": 41,
          "datasets/sentiment/dev.tsv": 21, "datasets/sentiment/test.tsv": 21}
# Top-level entries a page's folder links to; the folders are re-made with linked entries, so that a block
# writing models/teacher.bin or scripts/x writes into the temporary folder, never into the checkout.
LINKED = ["preprocess.py", "pretrain.py", "tencentpretrain", "finetune", "inference", "tests", "pyproject.toml",
          "requirements.txt", "requirements-test.txt", "requirements-demo.txt"]
MIRRORED = ["models", "scripts", "corpora", "datasets"]


class Block:
    def __init__(self, page, line, info, text):
        words = info.split()
        self.page, self.line, self.text = page, line, text
        self.lang = words[0] if words else ""
        self.marks = set(words[1:])

    @property
    def where(self):
        return f"{self.page}:{self.line}"

    @property
    def runnable(self):
        return "runnable" in self.marks

    @property
    def slow(self):
        return "slow" in self.marks


def blocks(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    return [Block(page, text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            for m in FENCE.finditer(text)]


def scaled(text):
    for pattern, replacement, _ in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text)
    return text


def real_folder(path):
    """Turn a linked folder into a real one whose entries are links, so that one entry can be replaced."""
    if path.is_symlink():
        source = os.readlink(path)
        path.unlink()
        os.makedirs(path)
        for entry in os.listdir(source):
            if entry != "__pycache__":
                os.symlink(os.path.join(source, entry), path / entry)


def page_dir(tmp_path):
    """A folder that looks like the checkout to the documented commands, with small data."""
    for name in LINKED + MIRRORED:
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    for name in MIRRORED:
        real_folder(tmp_path / name)
    for rel, keep in SHRUNK.items():
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            real_folder(tmp_path.joinpath(*parts[:depth]))
        target = tmp_path / rel
        target.unlink()
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            head = [line for _, line in zip(range(keep), f)]
        target.write_text("".join(head), encoding="utf-8")
    return tmp_path


def run_block(block, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if block.lang == "python":
        cmd = [sys.executable, "-c", block.text]
        shown = block.text
    else:
        shown = scaled(block.text)
        cmd = ["bash", "-euo", "pipefail", "-c", shown]
    run = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert run.returncode == 0, (f"{block.where}: the documented block failed (exit {run.returncode}):\n{shown}\n"
                                 f"--- stdout (end)\n{run.stdout[-3000:]}\n--- stderr (end)\n{run.stderr[-3000:]}")
    return run


# ---------------------------------------------------------------- the markers
def test_every_block_is_marked_and_every_skip_says_why():
    problems, runnable = [], 0
    for page in PAGES:
        for b in blocks(page):
            if b.lang not in SHELL + ("python",):
                continue
            if b.runnable == ("not-runnable" in b.marks):
                problems.append(f"{b.where}: ```{b.lang} needs exactly one of 'runnable' / 'not-runnable'")
            elif not b.runnable and not NOT_RUN.match(b.text):
                problems.append(f"{b.where}: a not-runnable block starts with '# not run by the docs test: <why>'")
            runnable += b.runnable
    assert not problems, "\n".join(problems)
    assert runnable >= 25, f"only {runnable} runnable blocks"


def test_the_markers_are_read_as_documented():
    page = "x.md"
    found = [Block(page, 1, m.group(1).strip(), m.group(2)) for m in FENCE.finditer(
        "```bash runnable slow\necho a\n```\n\n```bash not-runnable\n# not run by the docs test: GPU\n```\n")]
    assert [(b.lang, b.runnable, b.slow) for b in found] == [("bash", True, True), ("bash", False, False)]
    assert NOT_RUN.match(found[1].text) and not NOT_RUN.match("# GPU only\n")


def test_substitutions_scale_the_big_numbers_and_leave_small_ones():
    text = ("python pretrain.py --config_path models/bert/base_config.json --total_steps 400000 "
            "--batch_size 120 --report_steps 100 --save_checkpoint_steps 10000 --epochs_num 3 --processes_num 32\n"
            "python pretrain.py --total_steps 17 --batch_size 4 --report_steps 5 --total_steps 2000 --total_steps 240")
    assert scaled(text).splitlines() == [
        "python pretrain.py --config_path models/bert/tiny_config.json --total_steps 8 --batch_size 4 "
        "--report_steps 1 --save_checkpoint_steps 2 --epochs_num 1 --processes_num 1",
        "python pretrain.py --total_steps 17 --batch_size 4 --report_steps 5 --total_steps 4 --total_steps 2"]


def test_every_guide_page_starts_with_a_runnable_example():
    for page in PAGES:
        if page in ("README.md", os.path.join("docs", "README.md")):
            continue
        first = next((b for b in blocks(page) if b.lang in SHELL + ("python",)), None)
        assert first is not None and first.runnable, f"{page}: the first command block is not runnable"


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_between_pages_point_at_existing_files_and_headings():
    broken = []
    for page in PAGES:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = FENCE.sub("", f.read())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
                os.path.join(ROOT, page)
            if not os.path.exists(file):
                broken.append(f"{page}: {target} (no such file)")
            elif anchor and file.endswith(".md"):
                with open(file, encoding="utf-8") as f:
                    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", f.read()), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_slug_follows_github():
    assert slug("Processors (`--data_processor`)") == "processors---data_processor"
    assert slug("Old UER / WID-reference checkpoints -> new names") == "old-uer--wid-reference-checkpoints---new-names"


# ---------------------------------------------------------------- running the pages
def runnable_pages(slow):
    return [p for p in PAGES if any(b.runnable and (slow or not b.slow) for b in blocks(p))]


def run_page(page, tmp_path, slow):
    cwd = page_dir(tmp_path)
    ran = 0
    for b in blocks(page):
        if b.runnable and (slow or not b.slow):
            run_block(b, cwd)
            ran += 1
    assert ran > 0


@pytest.mark.parametrize("page", runnable_pages(slow=False))
def test_documented_commands_run(page, tmp_path):
    run_page(page, tmp_path, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in runnable_pages(slow=True)
                                  if any(b.slow for b in blocks(p))])
def test_documented_commands_run_with_the_slow_ones(page, tmp_path):
    run_page(page, tmp_path, slow=True)


def test_a_failing_block_fails_with_its_page_and_line(tmp_path):
    with pytest.raises(AssertionError, match=r"x\.md:7: the documented block failed \(exit 3\)"):
        run_block(Block("x.md", 7, "bash runnable", "exit 3\n"), tmp_path)


def test_page_dir_shrinks_the_data_and_keeps_the_checkout_clean(tmp_path):
    cwd = page_dir(tmp_path)
    with open(cwd / "datasets/sentiment/train.tsv", encoding="utf-8") as f:
        assert sum(1 for _ in f) == SHRUNK["datasets/sentiment/train.tsv"]
    assert os.path.islink(cwd / "models/bert") and not os.path.islink(cwd / "models")
    assert os.path.islink(cwd / "datasets/sentiment/README.md")
    (cwd / "models" / "written.bin").write_text("x")
    assert not os.path.exists(os.path.join(ROOT, "models", "written.bin"))


# ---------------------------------------------------------------- --help names the guide
# Every command-line script -> its guide page.
CLIS = {
    "preprocess.py": "docs/preprocessing.md",
    "pretrain.py": "docs/pretraining.md",
    **{f"finetune/{n}": "docs/finetuning.md" for n in (
        "run_classifier.py", "run_regression.py", "run_squad.py", "run_ner.py", "run_classifier_multi_label.py")},
    **{f"inference/{n}": "docs/finetuning.md" for n in (
        "run_classifier_infer.py", "run_regression_infer.py", "run_squad_infer.py", "run_ner_infer.py",
        "run_classifier_multi_label_infer.py")},
    "scripts/merge_compactors.py": "docs/wid.md",
    "scripts/attention_divergence.py": "docs/wid.md",
    "scripts/prune_by_magnitude.py": "docs/wid_demo.md",
    "scripts/wid_demo.py": "docs/wid_demo.md",
    "scripts/evaluate_mlm.py": "docs/wid_demo.md",
    "scripts/measure_latency.py": "docs/wid_demo.md",
    "scripts/convert_bert_from_huggingface_to_tencentpretrain.py": "docs/converting.md",
    "scripts/convert_bert_from_tencentpretrain_to_huggingface.py": "docs/converting.md",
    "scripts/convert_tencentpretrain_from_old_to_new.py": "docs/converting.md",
    "scripts/convert_dataset_from_tencentpretrain.py": "docs/converting.md",
    "scripts/glue_to_tsv.py": "docs/finetuning.md",
    "scripts/benchmark_glue.py": "docs/finetuning.md",
    **{f"scripts/{n}": "docs/migrating.md" for n in (
        "average_models.py", "extract_embeddings.py", "extract_features.py", "topn_words_indep.py",
        "cloze_test.py", "generate_lm.py")},
    **{f"scripts/{n}": "docs/performance.md" for n in (
        "benchmark.py", "benchmark_pretrain.py", "benchmark_preprocess.py", "benchmark_wid.py",
        "benchmark_finetune.py", "benchmark_compare.py")},
}

# One interpreter prints every script's --help (one torch import instead of forty), and lists the options
# of the parser that printed it which have no help text.
HELP_ALL = textwrap.dedent("""
    import argparse, contextlib, io, json, os, runpy, sys, traceback
    parsers, parse = [], argparse.ArgumentParser.parse_known_args
    def recording(self, *args, **kwargs):
        parsers.append(self)
        return parse(self, *args, **kwargs)
    argparse.ArgumentParser.parse_known_args = recording
    out = {}
    for path in sys.argv[1:]:
        buf, parsers[:] = io.StringIO(), []
        sys.argv = [path, "--help"]
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # as `python path` does
        try:
            with contextlib.redirect_stdout(buf):
                runpy.run_path(path, run_name="__main__")
        except SystemExit:
            pass
        except Exception:
            buf.write(traceback.format_exc())
        sys.path.pop(0)
        bare = [a.option_strings[0] for p in parsers[-1:] for a in p._actions if a.option_strings and not a.help]
        out[path] = {"help": buf.getvalue(), "bare": bare}
    print(json.dumps(out))
""")
BARE_OPTIONS_ALLOWED = set()  # every option of every script has a help text


@pytest.fixture(scope="module")
def helps():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", HELP_ALL, *CLIS], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_every_command_line_script_is_listed():
    scripts = {os.path.relpath(p, ROOT) for pattern in ("*.py", "finetune/*.py", "inference/*.py", "scripts/*.py")
               for p in glob.glob(os.path.join(ROOT, pattern))}
    assert scripts - set(CLIS) == set(), "add the new script to CLIS with its guide page"


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_help_names_its_guide_page_and_explains_every_option(cli, helps):
    text = helps[cli]["help"]
    assert text.startswith("usage:"), f"{cli} --help printed no usage:\n{text[:500]}"
    page = CLIS[cli]
    assert f"Guide: {page}" in " ".join(text.split()), f"{cli} --help does not say 'Guide: {page}'"
    assert os.path.isfile(os.path.join(ROOT, page))
    groups = re.findall(r"^(\S[^\n]*):\n", text, re.M)
    assert len([g for g in groups if not g.startswith("usage")]) >= 1, f"{cli} --help has no option group"
    if cli not in BARE_OPTIONS_ALLOWED:
        assert helps[cli]["bare"] == [], f"{cli} --help: options without a help text: {helps[cli]['bare']}"
