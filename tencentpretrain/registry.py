"""Name -> class registries, filled by decorators at import time.

Every component a user can pick by name (an embedding, an encoder, a target, a
tokenizer, a data processor, ...) registers itself here, and CLI `choices` are
read from the registries, so a new component needs no edit anywhere else.
"""


class Registry:
    def __init__(self, kind, packages):
        self.kind = kind
        self._entries = {}
        self._packages = packages  # the modules whose import fills this registry
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
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; choose one of: "
                           f"{', '.join(sorted(self._entries))}") from None

    def names(self):
        self._load()
        return sorted(self._entries)

    def __contains__(self, name):
        self._load()
        return name in self._entries

    def _load(self):
        if self._loaded:
            return
        self._loaded = True
        import importlib
        for module in self._packages:
            importlib.import_module(f"tencentpretrain.{module}")


# WID's compactor-bearing components register beside the plain ones.
EMBEDDINGS = Registry("embedding", ("embeddings",))  # WID's embedding compactor is chosen by the builder
ENCODERS = Registry("encoder", ("encoders", "wid"))
DECODERS = Registry("decoder", ("decoders",))
TARGETS = Registry("target", ("targets", "wid"))
TOKENIZERS = Registry("tokenizer", ("data.tokenizers",))
PROCESSORS = Registry("data processor", ("data.processors",))
