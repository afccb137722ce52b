"""Checkpoint conversion: Hugging Face BERT <-> this toolkit (hf_bert, hf_files) and old UER
names, including the WID authors' compactor names, -> new (uer_old)."""
