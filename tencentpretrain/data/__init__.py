"""Data pipeline: vocab and tokenizers, corpus processors, masking, on-disk dataset, loader.

Importing this package imports its modules so that their components register themselves
(tokenizers -> TOKENIZERS, processors -> PROCESSORS). Add new modules to the import list below.
"""
from . import vocab, tokenizers  # noqa: F401
from . import masking, dataset, processors  # noqa: F401  (loader.py imports torch: import it where needed)
