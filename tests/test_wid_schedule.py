import json

import torch

from tencentpretrain.wid import build_wid_plugin, load_teacher
from tencentpretrain.wid.groups import groups_of
from test_wid_helpers import batch, build_pair, train, wid_dict


def masks(model):
    return {g.name: g.keep.clone() for g in groups_of(model)}


def test_dim_schedule_masks_every_head_equally_and_grows_monotonically(tmp_path):
    log = tmp_path / "masks.jsonl"
    # 4 heads of 12 -> 4 heads of 6 in 2 stages (one per update), FFN 160 -> 64 in 4 updates
    _, model = build_pair(wid_dict(target=24, target_ffn=64, l2_lambda=0.0))
    cb, _ = train(model, 1, log_path=str(log))
    a = groups_of(model)[1]
    assert a.keep.view(4, 12).sum(1).tolist() == [9, 9, 9, 9]
    first = masks(model)
    train(model, 4, callback=cb, start=2)
    assert a.keep.view(4, 12).sum(1).tolist() == [6, 6, 6, 6]
    for name, keep in masks(model).items():
        assert not (keep & ~first[name]).any(), f"{name}: a masked coordinate came back"
    assert {g.name: g.n_kept for g in groups_of(model)} == {"S": 24, "A.0": 24, "F.0": 64, "A.1": 24, "F.1": 64,
                                                            "M": 24}
    assert cb.finished()
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert {l["step"] for l in lines} == {1, 2, 3, 4}
    f0 = [l for l in lines if l["group"] == "F.0"]
    assert [l["kept"] for l in f0] == [136, 112, 88, 64]
    assert len(f0[-1]["pruned"]) == 96 and set(f0[-1]["new"]) <= set(f0[-1]["pruned"])
    assert sorted(f0[-1]["pruned"]) == (~groups_of(model)[2].keep).nonzero().flatten().tolist()


def test_head_schedule_drops_whole_heads():
    _, model = build_pair(wid_dict(hidden=48, heads=4, ffn=96, target=24, target_ffn=48, strategy="head"))
    train(model, 2)
    for g in groups_of(model):
        if g.kind == "attention":
            per_head = g.keep.view(4, 12).sum(1).tolist()
            assert sorted(per_head) == [0, 0, 12, 12]


def test_penalty_decays_masked_entries_while_kept_ones_train():
    d = dict(layers=1, w_step=1, ffn_stages=1, attention_stages=1, compactor_learning_rate=1e-3)
    _, model = build_pair(wid_dict(l2_lambda=100.0, zero_below=0.0, **d))
    lin = model.encoder.transformer[0].feed_forward.linear_1
    f = groups_of(model)[2]
    cb, opt = train(model, 1, optimizer="sgd")  # SGD: the pull does not depend on Adam
    masked = ~f.keep
    start = lin.compactor_out.detach().clone()
    train(model, 10, callback=cb, opt=opt, start=2)
    now = lin.compactor_out.detach()
    # masked rows: only the pull, (1 - 1e-3 * 100)^10 of where they were
    ratio = now[masked].norm() / start[masked].norm()
    assert abs(ratio - 0.9 ** 10) < 1e-4  # (plus SGD's own weight decay, 1e-3 * 0.01 per step)
    assert (now[f.keep] - start[f.keep]).abs().max() > 1e-4  # kept rows still learn
    # with AdamW, a stronger pull: below zero_below (1e-3) after 10 steps, then exactly 0 and dead
    _, model = build_pair(wid_dict(l2_lambda=500.0, **d))
    cb, opt = train(model, 12)
    lin, f = model.encoder.transformer[0].feed_forward.linear_1, groups_of(model)[2]
    assert lin.compactor_out[~f.keep].abs().max() == 0
    assert lin.compactor_out[f.keep].abs().max() > 0.5
    assert not f.all_alive and f.alive_index.numel() == f.n_kept


def test_gradient_of_masked_entries_is_removed_before_the_step():
    _, model = build_pair(wid_dict(w_step=1, ffn_stages=1, attention_stages=1))
    (cb,), _ = build_wid_plugin(model, model.cfg)
    cb.update_masks(1)
    model(batch()).loss.backward()
    cb.after_backward(None)
    lin, s = model.encoder.transformer[1].self_attn.final_linear, groups_of(model)[0]
    assert lin.compactor_out.grad[~s.keep].abs().max() == 0
    assert lin.compactor_out.grad[s.keep].abs().max() > 0
    assert model.embedding.layer_norm.gamma.grad[~s.keep].abs().max() == 0


def test_resume_reproduces_masks_and_schedule(tmp_path):
    d = wid_dict(target=24, target_ffn=64, l2_lambda=5.0)
    _, straight = build_pair(d)
    train(straight, 4)
    _, first = build_pair(d)
    cb, opt = train(first, 2, log_path=str(tmp_path / "m.jsonl"))
    sd, cb_state, opt_state = first.state_dict(), cb.state_dict(), opt.state_dict()
    # a fresh process: build, load the checkpoint (masks are buffers in it), restore the callback
    _, resumed = build_pair(d)
    load_teacher(resumed, sd)
    assert all(torch.equal(a, b) for a, b in zip(masks(first).values(), masks(resumed).values()))
    (cb2,), claims = build_wid_plugin(resumed, resumed.cfg, None, log_path=str(tmp_path / "m.jsonl"))
    cb2.load_state_dict(cb_state)
    from tencentpretrain.training.optim import build_param_groups
    opt2 = torch.optim.AdamW(build_param_groups(resumed, 1e-3, 0.01, claims), lr=1e-3)
    opt2.load_state_dict(opt_state)
    train(resumed, 2, callback=cb2, opt=opt2, start=3)
    for name, keep in masks(straight).items():
        assert torch.equal(keep, masks(resumed)[name]), name
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
