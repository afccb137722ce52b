"""Data pipeline: vocab and tokenizers, corpus reading, processors, masking, on-disk dataset, loader.

    corpus.py      the corpus file: UTF-8 lines by byte offset, blocks
    processors/    corpus lines -> instances; one registered class per module, each declaring what
                   its instances hold (the dataset and the loader read that declaration)
    pipeline.py    preprocess(): options, checks, the blocks spread over worker processes
    dataset.py     the on-disk format (header + memory-mapped arrays), shard writers, reader
    masking.py     BERT masking, shared by static (preprocess) and dynamic (loader) masking
    loader.py      batches from a dataset file, sharded over ranks, resumable (imports torch:
                   import it where needed)

Importing this package imports the modules whose components register themselves (tokenizers ->
TOKENIZERS, processors -> PROCESSORS).
"""
from . import vocab, tokenizers  # noqa: F401
from . import masking, dataset, processors  # noqa: F401
