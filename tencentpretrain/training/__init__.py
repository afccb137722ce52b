"""Training: the loop (trainer.py), optimizer and schedules (optim.py), checkpoints (checkpoint.py),
processes (distributed.py), hooks (callbacks.py), progress lines (report.py), plugins (plugins.py),
the output's checks and lock (outputs.py), what a resume does with changed options (resume_options.py),
optimizer-state sharding over data-parallel ranks (zero.py)."""
from tencentpretrain.training.callbacks import Callback
from tencentpretrain.training.optim import ParamGroupClaim
from tencentpretrain.training.trainer import NonFiniteLossError, TrainConfig, Trainer

__all__ = ["Callback", "ParamGroupClaim", "NonFiniteLossError", "TrainConfig", "Trainer"]
