"""scripts/attention_divergence.py: does each student attend like its teacher? Per student layer, the mean
Jensen-Shannon divergence between its attention distributions and the teacher's, on held-out text.

    python scripts/attention_divergence.py --teacher runs/teacher.bin \\
        --model wid=runs/wid_student.bin --model kd=runs/kd_student.bin \\
        --model random=:models/bert/mini_config.json --dataset_path runs/eval.tpd --output_dir runs/attention

Writes <output_dir>/attention_divergence.json, .md (table) and .png (heat-map, with matplotlib). The
measurement is tencentpretrain/analysis/attention.py; `run_attention_divergence` is the same run in-process.
"""
import argparse
import os

import torch

from tencentpretrain.analysis.attention import attention_divergence, dataset_batches, text_batches
from tencentpretrain.analysis.attention_report import write_results
from tencentpretrain.config import config_path_beside
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.errors import UserError
from tencentpretrain.evaluation import load_model
from tencentpretrain.opts import tokenizer_opts
from tencentpretrain.resources import resolve
from tencentpretrain.tasks.suite_cli import model_specs


def build_parser():
    p = argparse.ArgumentParser(description="Per student layer, the mean Jensen-Shannon divergence between its "
                                "attention distributions and its teacher's on held-out text.",
                                epilog="Guide: docs/wid.md", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("models")
    g.add_argument("--teacher", required=True, metavar="PATH[:CONFIG]",
                   help="the teacher's weights, and its config when it is not the <stem>_config.json beside them")
    g.add_argument("--model", action="append", default=[], metavar="NAME=PATH[:CONFIG]",
                   help="a student to compare with the teacher, repeatable (one row each); an empty PATH with a "
                        "CONFIG is a random initialisation (seeded by --seed), e.g. "
                        "random=:models/bert/mini_config.json")
    g = p.add_argument_group("held-out text (one of)")
    data = g.add_mutually_exclusive_group(required=True)
    data.add_argument("--dataset_path", default=None,
                      help="a preprocess.py dataset (mlm or bert), read in file order with the masked tokens restored")
    data.add_argument("--corpus_path", default=None,
                      help="a text file, one paragraph per line, tokenised with the tokenizer below")
    tokenizer_opts(p)
    g = p.add_argument_group("run")
    g.add_argument("--seq_length", type=int, default=128, help="tokens per instance at most ([CLS] and [SEP] included)")
    g.add_argument("--max_instances", type=int, default=64, help="the first N instances (or non-blank lines)")
    g.add_argument("--batch_size", type=int, default=16, help="instances per forward")
    g.add_argument("--seed", type=int, default=7,
                   help="seeds the random initialisations and a dataset's (undone) masking")
    g.add_argument("--output_dir", default="runs/attention_divergence",
                   help="where attention_divergence.json, .md and .png go")
    return p


def _files(who, path, config):
    """(weights or None, config) of a model, checked to exist."""
    path, config = resolve(path), resolve(config)
    if path and not os.path.isfile(path):
        raise UserError(f"{who}: weights not found: {path}")
    config = config or (config_path_beside(path) if path else None)
    if config is None:
        raise UserError(f"{who}: a randomly initialised model needs a config")
    if not os.path.isfile(config):
        raise UserError(f"{who}: model config not found: {config} (give it as PATH:CONFIG)")
    return path, config


def run_attention_divergence(teacher_files, student_files, dataset_path=None, output_dir=None, max_instances=64,
                             seq_length=128, seed=7, batch_size=16, corpus_path=None, tokenizer=None, log=print):
    """Load the teacher and the students, measure (attention.attention_divergence) on the held-out text, and
    write the three files into `output_dir` (when given). Returns the results dict.

    `teacher_files` is (weights, config or None); `student_files` {name: (weights or None, config or None)}:
    a config None is the <stem>_config.json beside the weights, weights None a random initialisation of the
    config (seeded by `seed`). Held-out text: `dataset_path` (.tpd) or `corpus_path` (text, tokenised by
    `tokenizer`, default the BERT one)."""
    if not student_files:
        raise UserError("no student to compare: give at least one --model NAME=PATH[:CONFIG]")
    if (dataset_path is None) == (corpus_path is None):
        raise UserError("give the held-out text as exactly one of a dataset (.tpd) or a text file")
    for flag, value, low in (("--seq_length", seq_length, 3), ("--max_instances", max_instances, 1),
                             ("--batch_size", batch_size, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    t_path, t_config = _files("teacher", *teacher_files)
    if t_path is None:
        raise UserError("the teacher needs its weights (a random teacher teaches nothing)")
    teacher = load_model(t_config, t_path)
    students = {}
    for name, files in student_files.items():
        path, config = _files(f"model '{name}'", *files)
        if path is None:
            torch.manual_seed(seed)  # the same random student for the same seed
        students[name] = load_model(config, path, None if path else {"vocab_size": teacher.cfg.vocab_size})
    if dataset_path is not None:
        batches = dataset_batches(dataset_path, batch_size, max_instances, seq_length, seed)
    else:
        batches = text_batches(corpus_path, tokenizer or build_tokenizer(), batch_size, max_instances, seq_length)
    log(f"attention divergence: teacher {t_path} ({teacher.cfg.layers_num} layers, {teacher.cfg.heads_num} heads) "
        f"vs {', '.join(students)} on {sum(len(s) for s, _ in batches)} instances of {dataset_path or corpus_path}")
    results = attention_divergence(teacher, students, batches)
    results["settings"] = {"teacher": [t_path, t_config],
                           "models": {n: list(_files(n, *f)) for n, f in student_files.items()},
                           "dataset_path": dataset_path, "corpus_path": corpus_path, "seq_length": seq_length,
                           "max_instances": max_instances, "batch_size": batch_size, "seed": seed}
    for name, m in results["models"].items():
        log(f"  {name}: JS x 1000 per layer " + " ".join(f"{v * 1000:.3g}" for v in m["js"]) +
            f" (mean {m['mean'] * 1000:.3g}, heads {m['heads']})")
    if output_dir is not None:
        for path in write_results(results, output_dir, log):
            log(f"  wrote {path}")
    return results


def _teacher_files(value):
    """--teacher PATH[:CONFIG] parsed (and checked) as benchmark_glue's --model is."""
    try:
        spec, = model_specs(argparse.Namespace(model=[f"teacher={value}"], pretrained_model_path=None,
                                               config_path=None, name=None))
    except UserError as err:
        message = str(err).replace(f"--model teacher={value}", f"--teacher {value}")
        raise UserError(message.replace("NAME=PATH:CONFIG or --config_path", "--teacher PATH:CONFIG")) from None
    if spec.path is None:
        raise UserError(f"--teacher {value}: give the teacher's weights (a random teacher teaches nothing)")
    return spec.path, spec.config_path


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.model:
        raise UserError("no student to compare: give at least one --model NAME=PATH[:CONFIG]")
    teacher = _teacher_files(args.teacher)
    specs = model_specs(argparse.Namespace(model=args.model, pretrained_model_path=None, config_path=None, name=None))
    tokenizer = None
    if args.corpus_path is not None:
        tokenizer = build_tokenizer(args.tokenizer, vocab_path=resolve(args.vocab_path),
                                    spm_model_path=resolve(args.spm_model_path), do_lower_case=args.do_lower_case)
    run_attention_divergence(teacher, {s.name: (s.path, s.config_path) for s in specs}, args.dataset_path,
                             args.output_dir, args.max_instances, args.seq_length, args.seed, args.batch_size,
                             args.corpus_path, tokenizer)
    return 0
