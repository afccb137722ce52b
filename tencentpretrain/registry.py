"""Name -> class registries, filled by decorators at import time.

Every component a user can pick by name (an embedding, an encoder, a target, a
tokenizer, a data processor, ...) registers itself here, and CLI `choices` are
read from the registries, so a new component needs no edit anywhere else.
"""


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice "
                                 f"({self._entries[name].__module__} and {obj.__module__})")
            self._entries[name] = obj
            return obj
        return decorator

    def get(self, name):
        _load_builtin_components()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; choose one of: "
                           f"{', '.join(sorted(self._entries))}") from None

    def names(self):
        _load_builtin_components()
        return sorted(self._entries)

    def __contains__(self, name):
        _load_builtin_components()
        return name in self._entries


EMBEDDINGS = Registry("embedding")
ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
TARGETS = Registry("target")
TOKENIZERS = Registry("tokenizer")
PROCESSORS = Registry("data processor")

_loaded = False


def _load_builtin_components():
    """Import the packages whose modules register themselves (once, lazily)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    for pkg in ("embeddings", "encoders", "decoders", "targets", "data", "wid"):
        try:
            importlib.import_module(f"tencentpretrain.{pkg}")
        except ModuleNotFoundError as err:  # a package not written yet
            if err.name != f"tencentpretrain.{pkg}":
                raise
