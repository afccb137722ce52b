"""A fine-tuning task as one object, and the registry that names them.

`tasks/cli.py` runs every task the same way (finetune_main, infer_main) and `tasks/engine.py` trains
them; a task only says what is particular to it. The hooks, in the order the command lines call them:

  add_options(parser, training)    the task's own flags (classmethod; training=False: inference)
  from_args(args, log)             the task object for one command line; checks its flags
  read(path, labelled)             one file's examples; errors name the file and line
  prepare(cfg, splits)             fine-tuning, after reading: count the labels, record them in cfg
  encode(examples, tokenizer, seq_length, path, training)
                                   what the model eats: a dict of tensors (src, seg, targets) or an
                                   object whose `.tensors` is one
  build_model(cfg)                 a new task model: embedding, encoder and the task's head
  loss(model, batch)               the training loss of one batch (a dict of the encoded tensors)
  evaluate(model, data, run)       dev / test metrics, an ordered dict, the main metric first
  model_from_checkpoint(cfg, state_dict, args)
                                   inference: a model shaped like a fine-tuned checkpoint (its head checked)
  predict(model, data, run)        inference: the predictions
  write_predictions(data, predictions)
                                   inference: write --prediction_path; returns the closing line

A new task is one module: a Task subclass under @register_task("name"), entry points calling
cli.finetune_main / cli.infer_main, and thin finetune/ and inference/ scripts calling those.
"""
import importlib

from tencentpretrain.errors import UserError

# The toolkit's own task modules (tencentpretrain/tasks/<module>.py), imported when a name is looked up.
BUILTIN_MODULES = ("classification", "multi_label", "ner", "squad")
TASKS = {}


def register_task(name):
    """Class decorator: make a Task subclass available as `name`."""
    def add(cls):
        if TASKS.get(name, cls) is not cls:
            raise ValueError(f"task '{name}' is registered twice ({TASKS[name].__module__}, {cls.__module__})")
        cls.name = name
        TASKS[name] = cls
        return cls
    return add


def get_task(task):
    """The Task class registered as `task` (a Task class is returned as it is)."""
    if isinstance(task, type):
        return task
    if task not in TASKS:
        for module in BUILTIN_MODULES:
            importlib.import_module(f"tencentpretrain.tasks.{module}")
    if task not in TASKS:
        raise UserError(f"unknown fine-tuning task '{task}'; choose one of: {', '.join(sorted(TASKS))}")
    return TASKS[task]


class Task:
    """Defaults for the hooks a task may leave out; see the module docstring for the order."""

    name = None
    seq_length = 128  # default --seq_length of both command lines
    train_description = "Fine-tune a model."
    infer_description = "Predict with a fine-tuned model."
    args = None  # the parsed command line, set by bind()

    @staticmethod
    def log(msg):
        print(msg, flush=True)

    @classmethod
    def add_options(cls, parser, training):
        pass

    @classmethod
    def from_args(cls, args, log=print):
        return cls().bind(args, log)

    def bind(self, args, log):
        self.args, self.log = args, log
        return self

    def prepare(self, cfg, splits):
        """`splits`: [(path, examples)] of every file the run reads, the training file first."""

    @staticmethod
    def tensors(data):
        """The tensors of encoded `data`, which the engine batches."""
        return data if isinstance(data, dict) else data.tensors

    def load_model(self, cfg, args):
        """A fine-tuned model from --load_model_path, every key checked."""
        from tencentpretrain.model_io import load_model_weights, load_state_dict_file
        state_dict = load_state_dict_file(args.load_model_path)
        model = self.model_from_checkpoint(cfg, state_dict, args)
        load_model_weights(model, state_dict, where=args.load_model_path)
        return model

    # What every task must say.
    def read(self, path, labelled=True):
        raise NotImplementedError

    def encode(self, examples, tokenizer, seq_length, path, training=False):
        raise NotImplementedError

    def build_model(self, cfg):
        raise NotImplementedError

    def loss(self, model, batch):
        raise NotImplementedError

    def evaluate(self, model, data, run):
        raise NotImplementedError

    def model_from_checkpoint(self, cfg, state_dict, args):
        raise NotImplementedError

    def predict(self, model, data, run):
        raise NotImplementedError

    def write_predictions(self, data, predictions):
        raise NotImplementedError
