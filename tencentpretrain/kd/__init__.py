"""Knowledge distillation: a student trained to match a frozen teacher (DistilBERT, TinyBERT and MiniLM
as settings of one set of loss terms). Registered in tencentpretrain/features.py as the `kd` block;
feature.py lists its modules."""
