"""Sentiment fine-tuning of one demo model through the library's fine-tuning engine (tencentpretrain/tasks)."""
import os
import time

from tencentpretrain.resources import repo_root


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
