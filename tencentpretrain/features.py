"""The one extension point through which features (WID now, KD next) join the core.

A feature owns one block of the model config ("wid": {...}) and is active in a run whose config
has that block. The core never imports a feature: it asks this module, which imports a feature's
module (by the path in FEATURES) only when something needs it:

  a config file has the feature's block                     config.load_model_config
  a config names a component the feature provides           registry.Registry.get ("wid_transformer")
  a command line has flags the core does not know, or --help  parse_args
  a script asks for it by name                              get ("wid" in scripts/merge_compactors.py)

so a plain BERT run loads no feature code. What a feature may do is the Feature class below; each hook
has a do-nothing default. Adding a feature: a package with a module defining `FEATURE = MyFeature()`,
plus one line in FEATURES.
"""
import importlib
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FeatureEntry:
    module: str  # imported on first use; defines FEATURE, a Feature instance
    # Components the module registers, by registry kind ("encoder", "target", ...): they are listed
    # as choices and resolved by name without importing the feature first.
    components: dict = field(default_factory=dict)


# The registration list: config-block name -> where the feature lives. The only place features are named.
FEATURES = {
    "wid": FeatureEntry("tencentpretrain.wid.feature",
                        {"encoder": ("wid_transformer",), "target": ("wid_mlm",)}),
    "kd": FeatureEntry("tencentpretrain.kd.feature"),
}


class Feature:
    """What a feature can do to a run. `name` is its config block; every hook defaults to nothing."""
    name = None
    # Block keys a `--resume` may change (key -> what the change does, printed when applied); a change
    # of any other key of the block is refused on resume (training/resume_options.py).
    resume_may_change = {}

    # ---- the config block ------------------------------------------------------------------------
    def parse_block(self, value, where):
        """The block as read from a config file (a dict) -> the feature's typed, validated settings.
        `where` names the file for error messages. Must accept an already parsed block unchanged."""
        return value

    # ---- the command line (pretrain.py) -------------------------------------------------------------
    def add_options(self, parser):
        """Add the feature's flags to `parser` (default argparse.SUPPRESS, so only typed ones appear)."""

    def apply_options(self, model_cfg, args):
        """Apply the feature's flags in `args` to `model_cfg`, in place. May switch the feature on (set
        model_cfg.<name>); must do nothing when `args` has none of its flags and the config has no block."""

    # ---- the model -----------------------------------------------------------------------------------
    def build_embedding(self, cfg):
        """The encoder-side embedding to use instead of the plain one, or None."""
        return None

    def on_model_built(self, model):
        """Called by build_model after the default initialisation and weight tying."""

    # ---- training ----------------------------------------------------------------------------------
    def training_plugins(self, model, model_cfg, train_cfg):
        """([Callback], [ParamGroupClaim]) for the trainer (see training/callbacks.py, optim.py)."""
        return [], []

    def load_pretrained(self, model, path):
        """Load --pretrained_model_path into `model` and return the LoadReport, or None to let the core
        load it as it loads a plain model."""
        return None

    # ---- export ------------------------------------------------------------------------------------
    def add_export_options(self, parser):
        """Flags of the feature's export command (scripts/merge_compactors.py for WID)."""

    def export(self, load_model_path, config_path, output_model_path, output_config_path=None, options=None):
        """Turn a trained checkpoint into a plain model: writes the weights and their config json, and
        returns (config path, config dict). `options`: the export command's parsed flags, as a dict."""
        raise NotImplementedError(f"feature '{self.name}' has no export")


_loaded = {}


def get(name):
    """The Feature registered under config block `name`, importing its module on first use."""
    if name not in _loaded:
        module = importlib.import_module(FEATURES[name].module)
        feature = module.FEATURE
        if feature.name != name:
            raise RuntimeError(f"{FEATURES[name].module}.FEATURE is named '{feature.name}', registered as '{name}'")
        _loaded[name] = feature
    return _loaded[name]


def loaded():
    """The features imported so far in this process."""
    return list(_loaded.values())


def all_features():
    return [get(name) for name in FEATURES]


def active(cfg):
    """The features whose block `cfg` (a ModelConfig) has, in registration order."""
    return [get(name) for name in FEATURES if name in cfg.features]


def provided(kind):
    """Names of the `kind` components ("encoder", ...) that features provide, without importing them."""
    return [c for entry in FEATURES.values() for c in entry.components.get(kind, ())]


def load_provider(kind, name):
    """Import the feature that provides the `kind` component `name`; False if none does."""
    for block, entry in FEATURES.items():
        if name in entry.components.get(kind, ()):
            get(block)
            return True
    return False


def apply_options(model_cfg, args):
    """Let every feature that is active or has its flags on the parser apply them to `model_cfg`."""
    for feature in {id(f): f for f in loaded() + active(model_cfg)}.values():
        feature.apply_options(model_cfg, args)
    return model_cfg


class _ParseFailed(Exception):
    pass


def _fail(message):
    raise _ParseFailed(message)


def _wants_help(argv):
    return any(a == "-h" or (len(a) >= 4 and "--help".startswith(a)) for a in argv)


def parse_args(parser, argv=None):
    """Parse `argv` with `parser` (the core's options), adding the features' options only when needed.

    The core parser is tried first; only flags it does not know, --help, or an error (so that argparse
    reports it with the full option list) import the features and add their options before the real
    parse. A plain run thus loads no feature, and the full command line parses exactly as if every
    feature's options had always been there."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not _wants_help(argv):
        parser.error = _fail  # an instance attribute, removed below
        try:
            args, rest = parser.parse_known_args(argv)
            if not rest:
                return args
        except _ParseFailed:
            pass
        finally:
            del parser.error
    if not getattr(parser, "feature_options_added", False):
        for feature in all_features():
            feature.add_options(parser)
        parser.feature_options_added = True
    return parser.parse_args(argv)
