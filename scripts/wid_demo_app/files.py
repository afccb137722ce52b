"""Small file helpers of the demo: reading its JSON files, a log that also prints, the corpus split.
(JSON is written with the library's atomic tencentpretrain.utils.io.write_json.)"""
import json

from tencentpretrain.errors import UserError
from tencentpretrain.utils.io import atomic_write


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Tee:
    """Append to a log file, and print to stdout (after `prefix`) unless echo is False."""

    def __init__(self, path, echo=True, prefix=""):
        self.path, self.echo, self.prefix = path, echo, prefix

    def __call__(self, *parts, flush=True, **_):
        text = " ".join(str(p) for p in parts)
        if self.echo:
            print(self.prefix + text, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text + "\n")


def split_corpus(corpus_path, train_path, eval_path, eval_chapters, train_lines=None):
    """Hold out the last `eval_chapters` chapters (blank-line separated) for evaluation."""
    with open(corpus_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blanks = [i for i, line in enumerate(lines) if not line.strip()]
    if len(blanks) < eval_chapters:
        raise UserError(f"{corpus_path}: {len(blanks) + 1} chapters (blank-line separated), cannot hold out "
                        f"{eval_chapters}")
    cut = blanks[-eval_chapters]
    train, held_out = lines[:cut], [line for line in lines[cut + 1:] if line.strip()]
    if train_lines:
        train = train[:train_lines]
    for path, part in ((train_path, train), (eval_path, held_out)):
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    return len(train), len(held_out)
