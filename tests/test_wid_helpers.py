"""Shared helpers of the WID tests (no tests here): tiny teachers, a manual training loop."""
import copy
from types import SimpleNamespace

import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.model_builder import build_model
from tencentpretrain.training.optim import build_param_groups
from tencentpretrain.wid import build_wid_plugin, load_teacher
from tencentpretrain.wid.groups import groups_of
from tencentpretrain.wid.penalty import _along

VOCAB = 97


def wid_dict(hidden=48, heads=4, ffn=160, layers=2, target=24, target_ffn=64, strategy="dim", **wid):
    block = {"target_hidden_size": target, "target_feedforward_size": target_ffn, "strategy": strategy,
             "w_step": 1, "ffn_stages": 4, "attention_stages": 2, "attention_stage_interval": 1,
             "l2_lambda": 20.0, "compactor_learning_rate": 1e-3, **wid}
    return {"emb_size": hidden, "hidden_size": hidden, "heads_num": heads, "feedforward_size": ffn,
            "layers_num": layers, "max_seq_length": 32, "vocab_size": VOCAB, "dropout": 0.0,
            "tie_weights": True, "encoder": "wid_transformer", "target": ["wid_mlm"], "wid": block}


def teacher_dict(d):
    t = {k: v for k, v in d.items() if k != "wid"}
    t.update(encoder="transformer", target=["mlm", "sp"])
    return t


def build_pair(d, seed=0):
    """(teacher, WID model with the teacher's weights); the teacher has an sp head too."""
    torch.manual_seed(seed)
    teacher = build_model(load_model_config(None, teacher_dict(d))).eval()
    model = build_model(load_model_config(None, copy.deepcopy(d)))
    load_teacher(model, teacher.state_dict())
    return teacher, model


def batch(batch_size=4, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, VOCAB, (batch_size, length), generator=g)
    seg = torch.ones_like(src)
    seg[:, length // 2:] = 2
    seg[0, -3:] = 0  # some padding
    tgt = torch.where(torch.rand(src.shape, generator=g) < 0.3, src, torch.full_like(src, -100))
    tgt[:, 1] = src[:, 1]
    return {"src": src, "seg": seg, "tgt_mlm": tgt, "tgt_sp": torch.zeros(batch_size, dtype=torch.long)}


def train(model, steps, log_path=None, lr=1e-3, optimizer="adamw", callback=None, start=1, opt=None, seed=0):
    """The trainer's hook order, by hand: backward, after_backward, step, on_step_end."""
    if callback is None:
        (callback,), claims = build_wid_plugin(model, model.cfg, None, log_path=log_path)
    else:
        claims = callback.claims()
    if opt is None:
        groups = build_param_groups(model, lr, 0.01, claims)
        opt = torch.optim.AdamW(groups, lr=lr) if optimizer == "adamw" else torch.optim.SGD(groups, lr=lr)
    trainer = SimpleNamespace(optimizer=opt, env=None, step=start - 1)
    model.train()
    for step in range(start, start + steps):
        model(batch(seed=seed + step)).loss.backward()
        callback.after_backward(trainer)
        opt.step()
        opt.zero_grad(set_to_none=True)
        callback.on_step_end(trainer, step)
    model.eval()
    return callback, opt


@torch.no_grad()
def zero_masked(model):
    """What a long run reaches: every masked entry exactly 0."""
    for g in groups_of(model):
        g.decay.masked_fill_(~g.keep, 0.0)
        for p, axis, _ in g.params():
            p.mul_(_along(g.keep_float.to(p.dtype), p, axis))
        g.refresh()


def logits(model, b):
    return model.target.mlm.logits(model.encode(b["src"], b["seg"]))
