"""Vocabulary (one token per line) and the special-token names shared by every tokenizer."""
import functools
import json

from tencentpretrain import resources
from tencentpretrain.errors import UserError

# Roles every tokenizer exposes as `<role>_id`; their strings come from models/special_tokens_map.json.
SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask")


class Vocab:
    """Token <-> id. `i2w[i]` is the token on line i; `w2i` maps a token to its id."""

    def __init__(self, tokens, path=None):
        self.i2w = list(tokens)
        # A token listed twice keeps its last id, as BERT's and Hugging Face's loaders do.
        self.w2i = {w: i for i, w in enumerate(self.i2w)}
        self.path = path  # where it came from, for error messages

    @classmethod
    def load(cls, path):
        path = resources.resolve(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise UserError(f"vocab file not found: {path} (pass --vocab_path with a one-token-per-line file)") from None
        except IsADirectoryError:
            raise UserError(f"vocab path is a directory, not a file: {path}") from None
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":  # the final newline ends the last line, it adds no token
            lines.pop()
        if not lines:
            raise UserError(f"vocab file is empty: {path} (expected one token per line)")
        tokens = []
        for lineno, line in enumerate(lines, 1):
            try:
                tokens.append(line.decode("utf-8").rstrip("\r"))
            except UnicodeDecodeError as err:
                raise UserError(f"vocab file {path} line {lineno} is not valid UTF-8 ({err.reason} at byte "
                                f"{err.start}); re-save the vocab as UTF-8") from None
        return cls(tokens, path=path)

    def __len__(self):
        return len(self.i2w)

    def __contains__(self, token):
        return token in self.w2i

    def get(self, token, default=None):
        return self.w2i.get(token, default)

    def __repr__(self):
        return f"Vocab({len(self)} tokens from {self.path})"


@functools.lru_cache(maxsize=None)
def special_tokens(path=None):
    """{'pad': '[PAD]', 'unk': '[UNK]', 'cls': '[CLS]', 'sep': '[SEP]', 'mask': '[MASK]'} from the shipped map."""
    path = path or resources.special_tokens_map_path()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"special tokens map not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"special tokens map {path} is not valid JSON: {err}") from None
    out = {}
    for role in SPECIAL_ROLES:
        token = data.get(f"{role}_token")
        if not isinstance(token, str) or not token:
            raise UserError(f"special tokens map {path} lacks the string key '{role}_token'")
        out[role] = token
    return out
