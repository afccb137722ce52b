"""Data processors: corpus lines -> instances, one registered class per module.

Each module here defines a `Processor` subclass registered under its --data_processor name; this
package imports every module in it, so a new processor is one new file (no list to edit). A processor
declares what its instances hold (`targets`, `instance_arrays`, `labels`, see base.py); the dataset
file, the loader and pretrain's target check read that declaration and never name a processor.
"""
import importlib
import pkgutil

from tencentpretrain.data.processors.base import Processor  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
