"""Weight-Inherited Distillation: compactors, mask groups, schedule, penalty, merge (docs/wid.md: "Compressing
BERT with Weight-Inherited Distillation (WID)").

The core reaches WID only through feature.py (registered in tencentpretrain/features.py), which it
imports when a model config has a `wid` block, names "wid_transformer"/"wid_mlm", or a command line
has WID flags. Importing this package registers the encoder "wid_transformer" and the target "wid_mlm".
"""
from tencentpretrain.wid.cli import apply_wid_overrides, wid_opts  # noqa: F401
from tencentpretrain.wid.config import WidConfig, plan_geometry  # noqa: F401
from tencentpretrain.wid.modules import CompactedEmbedding, WidMlmTarget, WidTransformerEncoder  # noqa: F401
from tencentpretrain.wid.model import attach_wid, load_teacher, teacher_allowances  # noqa: F401
from tencentpretrain.wid.plugin import WidCallback, build_wid_plugin  # noqa: F401
