"""WID mask strategies, registered by name: the config's `wid.strategy` (`--compactor_mask_strategy`).

    dim   every head keeps the same number of dims (all heads kept, narrower)      dim.py
    head  whole heads are dropped, one per stage (fewer heads of the teacher's size) head.py

A strategy is a MaskStrategy (base.py) registered with `@MASK_STRATEGIES.register("name")`. Every module
of this package is imported the first time a strategy is looked up, so a new strategy is one file here
(plus a model config naming it and a test); WID training, the merge and magnitude pruning all use it.
"""
import pkgutil

from tencentpretrain.errors import UserError
from tencentpretrain.registry import Registry

# Every module of the package but base.py, imported on the first lookup.
_MODULES = tuple(f"wid.strategies.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name != "base")
MASK_STRATEGIES = Registry("WID mask strategy", _MODULES)


def strategy_names():
    return MASK_STRATEGIES.names()


def get_strategy(name, where="wid.strategy"):
    """The strategy registered as `name` (a MaskStrategy instance), or a UserError listing the choices."""
    if name not in MASK_STRATEGIES:
        raise UserError(f"{where}: unknown mask strategy '{name}'; choose one of: {', '.join(strategy_names())}")
    strategy = MASK_STRATEGIES.get(name)()
    strategy.name = name
    return strategy
