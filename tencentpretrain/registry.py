"""Name -> class registries, filled by decorators at import time.

Every component a user can pick by name (an embedding, an encoder, a target, a tokenizer, a data
processor, ...) registers itself here, and CLI `choices` are read from the registries, so a new
component needs no edit anywhere else. The core's own packages are imported on first use; a name a
feature provides (WID's "wid_transformer") is listed from features.FEATURES and its feature is
imported only when that name is asked for.
"""
import importlib

from tencentpretrain import features


class Registry:
    def __init__(self, kind, packages):
        self.kind = kind
        self._entries = {}
        self._packages = packages  # the core modules whose import fills this registry
        self._loaded = False

    def register(self, name):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice "
                                 f"({self._entries[name].__module__} and {obj.__module__})")
            self._entries[name] = obj
            return obj
        return decorator

    def get(self, name):
        self._load()
        if name not in self._entries and features.load_provider(self.kind, name) and name not in self._entries:
            raise RuntimeError(f"features.FEATURES lists {self.kind} '{name}', but importing its feature did "
                               f"not register it")
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}") from None

    def names(self):
        self._load()
        return sorted(set(self._entries) | set(features.provided(self.kind)))

    def __contains__(self, name):
        return name in self.names()

    def _load(self):
        if self._loaded:
            return
        self._loaded = True
        for module in self._packages:
            importlib.import_module(f"tencentpretrain.{module}")


EMBEDDINGS = Registry("embedding", ("embeddings",))
ENCODERS = Registry("encoder", ("encoders",))
DECODERS = Registry("decoder", ("decoders",))
TARGETS = Registry("target", ("targets",))
TOKENIZERS = Registry("tokenizer", ("data.tokenizers",))
PROCESSORS = Registry("data processor", ("data.processors",))
