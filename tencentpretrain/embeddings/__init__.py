from tencentpretrain.embeddings.embedding import Embedding  # noqa: F401  (registers word/pos/seg)
