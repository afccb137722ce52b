"""Shipped resources, found relative to the package (never the working directory)."""
import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_root():
    return _ROOT


def models_dir():
    return os.path.join(_ROOT, "models")


def default_vocab_path():
    return os.path.join(models_dir(), "google_uncased_en_vocab.txt")


def special_tokens_map_path():
    return os.path.join(models_dir(), "special_tokens_map.json")


def resolve(path):
    """A user path as given; a bare `models/...` path that does not exist here is looked up in the repo."""
    if path is None or os.path.exists(path) or os.path.isabs(path):
        return path
    candidate = os.path.join(_ROOT, path)
    return candidate if os.path.exists(candidate) else path
