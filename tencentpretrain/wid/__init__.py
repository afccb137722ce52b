"""Weight-Inherited Distillation: compactors, mask groups, schedule, penalty, merge (see WID.md).

Importing this package registers the encoder "wid_transformer" and the target "wid_mlm".
"""
from tencentpretrain.wid.cli import apply_wid_overrides, wid_opts  # noqa: F401
from tencentpretrain.wid.config import WidConfig, plan_geometry  # noqa: F401
from tencentpretrain.wid.modules import CompactedEmbedding, WidMlmTarget, WidTransformerEncoder  # noqa: F401
from tencentpretrain.wid.model import attach_wid, load_teacher, teacher_allowances  # noqa: F401
from tencentpretrain.wid.plugin import WidCallback, build_wid_plugin  # noqa: F401
