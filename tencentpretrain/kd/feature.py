"""Knowledge distillation (KD) as a feature of the core (tencentpretrain/features.py): the `kd` block of
a student's model config.

Each hook hands over to the KD module that does the work:
    block        KdConfig.from_dict                                      config.py
    options      --teacher_model_path / --teacher_config_path; given with a plain config they switch
                 KD on with DistilBERT's soft targets; the teacher and the layer plan are checked
                 before any process starts                              teacher.py, config.plan
    training     KdCallback (the teacher's forward and the loss terms) and the projection's group
                                                                         plugin.py, losses.py
The student's model is a plain BERT: KD changes no module, and its checkpoint and recorded config are
the plain student's.
"""
import argparse
import dataclasses
import os

from tencentpretrain.features import Feature
from tencentpretrain.kd.config import KdConfig, plan
from tencentpretrain.kd.plugin import build_kd_plugin
from tencentpretrain.kd.teacher import teacher_config
from tencentpretrain.utils.log import info

FLAGS = ("teacher_model_path", "teacher_config_path")


class KdFeature(Feature):
    name = "kd"

    def parse_block(self, value, where):
        return KdConfig.from_dict(value, where=where)

    def add_options(self, parser):
        g = parser.add_argument_group("knowledge distillation (the config's kd block, see models/kd/)")
        g.add_argument("--teacher_model_path", default=argparse.SUPPRESS,
                       help="the teacher's weights (overrides kd.teacher_model_path); with a config that has no "
                            "kd block, distils with DistilBERT's soft targets (kd.logits 1, kd.mlm 1)")
        g.add_argument("--teacher_config_path", default=argparse.SUPPRESS,
                       help="the teacher's model config (default: kd.teacher_config_path, else the "
                            "<stem>_config.json beside the teacher's weights)")

    def apply_options(self, model_cfg, args):
        given = {name: getattr(args, name) for name in FLAGS if hasattr(args, name)}
        if model_cfg.kd is None and not given:
            return
        if model_cfg.kd is None:
            kd = KdConfig(logits=1.0, mlm=1.0)
            info("note: the config has no kd block: distilling with DistilBERT's soft targets (kd.logits 1, "
                 "kd.mlm 1); models/kd/*.json have the DistilBERT, TinyBERT and MiniLM recipes", flush=True)
        else:
            kd = dataclasses.replace(model_cfg.kd)
        for name, path in given.items():
            setattr(kd, name, os.path.abspath(path))
        model_cfg.kd = kd.check("command line")
        plan(kd, model_cfg, teacher_config(kd, model_cfg))  # refuse a mismatch before any process starts

    def training_plugins(self, model, model_cfg, train_cfg):
        return build_kd_plugin(model, model_cfg, train_cfg)


FEATURE = KdFeature()
