"""Packaging: the Python version pyproject.toml declares is the one the code runs on, and what
scripts/quickstart.sh installs covers what the quick start's job imports."""
import ast
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def requires_python():
    """pyproject's requires-python, read without tomllib so that an older interpreter fails, not skips."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        m = re.search(r'^requires-python\s*=\s*"([^"]*)"', f.read(), re.M)
    assert m, "pyproject.toml declares no requires-python"
    return m.group(1)


def minimum_python(spec):
    """(3, 11) from '>=3.11'; the declaration must be a plain lower bound."""
    m = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", spec)
    assert m, f"requires-python {spec!r}: expected a plain '>=X.Y'"
    return int(m.group(1)), int(m.group(2))


def source_files():
    """Every .py file of the project (not virtual environments, run outputs or hidden folders)."""
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")) and d != "runs"
                         and not os.path.isfile(os.path.join(top, d, "pyvenv.cfg")))
        yield from (os.path.join(top, f) for f in sorted(files) if f.endswith(".py"))


def requirement_names(path):
    """Lower-case distribution names in a requirements file, following `-r other.txt`."""
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r"):
                names |= requirement_names(os.path.join(os.path.dirname(path), line[2:].strip()))
            elif line:
                names.add(re.match(r"[A-Za-z0-9._-]+", line).group(0).lower())
    return names


def test_running_interpreter_satisfies_requires_python():
    declared = minimum_python(requires_python())
    assert declared == (3, 11), f"declared {declared}: only Python 3.11 is tested here"
    assert sys.version_info[:2] >= declared


def test_no_source_file_needs_a_newer_python_than_declared():
    declared = minimum_python(requires_python())
    assert requires_python() == pyproject()["project"]["requires-python"]
    files = list(source_files())
    assert len(files) > 50 and os.path.join(ROOT, "pretrain.py") in files
    too_new = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            ast.parse(text, filename=path, feature_version=declared)
        except SyntaxError as err:
            too_new.append(f"{os.path.relpath(path, ROOT)}:{err.lineno}: {err.msg}")
    assert not too_new, f"syntax newer than Python {declared[0]}.{declared[1]}:\n" + "\n".join(too_new)


def test_feature_version_check_catches_newer_syntax():
    # the check above can fail: a 3.12 type alias is refused at 3.11
    with pytest.raises(SyntaxError):
        ast.parse("type Pair = tuple[int, int]\n", feature_version=(3, 11))


def test_quickstart_installs_what_its_job_uses():
    with open(os.path.join(ROOT, "scripts", "quickstart.sh"), encoding="utf-8") as f:
        script = f.read()
    assert "python -m pip install -r requirements-demo.txt" in script
    assert '"$@"' in script  # CI passes --preset smoke --run_dir through
    installed = requirement_names(os.path.join(ROOT, "requirements-demo.txt"))
    # safetensors: the teacher is model.safetensors; matplotlib: the plot
    assert {"torch", "numpy", "safetensors", "matplotlib"} <= installed
    project = pyproject()["project"]
    runtime = {re.match(r"[A-Za-z0-9._-]+", d).group(0).lower() for d in project["dependencies"]}
    assert runtime == requirement_names(os.path.join(ROOT, "requirements.txt"))
    extras = {re.match(r"[A-Za-z0-9._-]+", d).group(0).lower()
              for name in ("hf", "plot") for d in project["optional-dependencies"][name]}
    assert {"safetensors", "matplotlib"} <= extras


def test_torch_is_pinned_to_the_local_wheel_everywhere():
    # an unpinned torch pulls gigabytes of CUDA libraries; 2.13.0 is the CPU wheel pip finds locally
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        assert "torch==2.13.0" in f.read().split()
    assert "torch==2.13.0" in pyproject()["project"]["dependencies"]
