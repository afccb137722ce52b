"""WID as a feature of the core (tencentpretrain/features.py): the `wid` block of a model config.

Each hook hands over to the WID module that does the work:
    block        WidConfig.from_dict                      config.py
    options      the reference code's flags; a plain BERT config plus any of them is compressed with WID
                                                          cli.py
    model        CompactedEmbedding for the embedding, then identity compactors and mask groups
                                                          modules.py, model.py
    training     WidCallback and the compactors' parameter group     plugin.py
    pretrained   a plain teacher into the compacted model          model.load_teacher
    export       fold the compactors into a dense student          merge.py (scripts/merge_compactors.py)
"""
from tencentpretrain.features import Feature
from tencentpretrain.wid.cli import apply_wid_overrides, wid_opts
from tencentpretrain.wid.config import WidConfig
from tencentpretrain.wid.merge import merge_checkpoint
from tencentpretrain.wid.model import attach_wid, load_teacher
from tencentpretrain.wid.modules import CompactedEmbedding
from tencentpretrain.wid.plugin import build_wid_plugin


class WidFeature(Feature):
    name = "wid"
    # Block keys a --resume may change (training/resume_options.py); a change of any other key is refused.
    resume_may_change = {
        "l2_lambda": "masked entries decay at the new rate from the next step on",
        "compactor_learning_rate": "the compactors' schedule continues with the new peak learning rate",
        "compactor_weight_decay": "used from the next step on",
        "zero_below": "the new threshold for zeroing decayed entries applies from the next step on",
        "mask_path": "later mask updates are logged to the new file",
        "print_updates": "display only",
    }

    def parse_block(self, value, where):
        return WidConfig.from_dict(value, where=where)

    def add_options(self, parser):
        wid_opts(parser)

    def apply_options(self, model_cfg, args):
        apply_wid_overrides(model_cfg, args)

    def build_embedding(self, cfg):
        return CompactedEmbedding(cfg, cfg.embedding)  # a compactor on the summed embeddings

    def on_model_built(self, model):
        attach_wid(model)

    def training_plugins(self, model, model_cfg, train_cfg):
        return build_wid_plugin(model, model_cfg, train_cfg)

    def load_pretrained(self, model, path):
        return load_teacher(model, path)

    def add_export_options(self, parser):
        parser.add_argument("--allow_live_masked", action="store_true",
                            help="merge even if masked coordinates have not decayed below wid.zero_below yet "
                                 "(the student then differs from the trained model; a warning says by how much)")
        wid_opts(parser)  # the same WID flags the training run was given, if any

    def export(self, load_model_path, config_path, output_model_path, output_config_path=None, options=None):
        options = dict(options or {})
        return merge_checkpoint(load_model_path, config_path, output_model_path, output_config_path, options,
                                bool(options.get("allow_live_masked")))


FEATURE = WidFeature()
