from tencentpretrain.targets import cls_target, lm_target, mlm_target, sp_target  # noqa: F401
from tencentpretrain.targets.target import Target  # noqa: F401
