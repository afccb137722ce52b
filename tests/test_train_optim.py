"""Parameter groups, AdamW with and without bias correction, learning-rate schedules."""
import math

import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.training import Callback, ParamGroupClaim, TrainConfig, Trainer
from tencentpretrain.training.optim import (AdamWNoBiasCorrection, build_optimizer, build_param_groups,
                                            build_scheduler, lr_factor)
from tencentpretrain.training.toy import ToyLoader, ToyModel


def _lrs(name, total, warmup):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, name, total, warmup)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_schedule_values():
    # total 10, warmup 0.2 -> W = 2: warm (s+1)/W, then linear to 0 over the remaining 8 steps
    assert _lrs("linear", 10, 0.2) == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_cosine_schedule_values():
    lrs = _lrs("cosine", 10, 0.2)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[6] == pytest.approx(0.5)  # halfway through the decay
    assert lrs[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_constant_with_warmup_schedule_values():
    assert _lrs("constant_with_warmup", 8, 0.5) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_unknown_scheduler_and_bad_warmup_are_user_errors():
    with pytest.raises(UserError, match="--scheduler 'poly'"):
        lr_factor("poly", 10, 1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UserError, match="--warmup 1.5"):
        build_scheduler(opt, "linear", 10, 1.5)


def test_no_weight_decay_for_bias_and_layernorm():
    groups = {g["name"]: g for g in build_param_groups(ToyModel(), 1e-3, 0.01)}
    assert sorted(groups["default"]["param_names"]) == ["embedding.weight", "linear.weight", "output.weight"]
    assert sorted(groups["default_no_decay"]["param_names"]) == [
        "layer_norm.bias", "layer_norm.weight", "linear.bias", "output.bias"]
    assert groups["default"]["weight_decay"] == 0.01 and groups["default_no_decay"]["weight_decay"] == 0.0


def test_no_weight_decay_for_tencentpretrain_gamma_beta():
    from tencentpretrain.config import load_model_config
    from tencentpretrain.model_builder import build_model
    from tencentpretrain.resources import models_dir
    cfg = load_model_config(f"{models_dir()}/bert/tiny_config.json", {"vocab_size": 50, "layers_num": 1})
    groups = {g["name"]: g for g in build_param_groups(build_model(cfg), 1e-3, 0.01)}
    no_decay = groups["default_no_decay"]["param_names"]
    assert "encoder.transformer.0.layer_norm_1.gamma" in no_decay
    assert "embedding.layer_norm.beta" in no_decay
    assert "encoder.transformer.0.feed_forward.linear_1.bias" in no_decay
    assert "encoder.transformer.0.feed_forward.linear_1.weight" in groups["default"]["param_names"]


def test_param_group_claims_take_parameters_out_of_default_groups():
    claims = [ParamGroupClaim("fast", lambda n, p: n.startswith("linear."), lr=0.5, weight_decay=0.2)]
    groups = {g["name"]: g for g in build_param_groups(ToyModel(), 1e-3, 0.01, claims)}
    assert groups["fast"]["param_names"] == ["linear.weight"]
    assert groups["fast"]["lr"] == 0.5 and groups["fast"]["weight_decay"] == 0.2
    assert groups["fast_no_decay"]["param_names"] == ["linear.bias"]
    assert groups["fast_no_decay"]["lr"] == 0.5 and groups["fast_no_decay"]["weight_decay"] == 0.0
    default_names = groups["default"]["param_names"] + groups["default_no_decay"]["param_names"]
    assert not any(n.startswith("linear.") for n in default_names)


def test_callback_claims_get_their_own_lr_through_the_schedule():
    class Claimer(Callback):
        def param_claims(self, model):
            return [ParamGroupClaim("frozenish", lambda n, p: n.startswith("output."), lr=1e-6, weight_decay=0.0)]

    torch.manual_seed(0)
    model = ToyModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(total_steps=4, learning_rate=1e-1, warmup=0.0, scheduler="constant_with_warmup",
                      report_steps=100)
    trainer = Trainer(model, ToyLoader(), cfg, callbacks=[Claimer()], log=lambda *a, **k: None)
    trainer.fit()
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["frozenish"] == pytest.approx(1e-6) and lrs["default"] == pytest.approx(1e-1)
    # AdamW moves each weight by about lr per step: the claimed head barely moves, the rest moves
    head_move = (model.output.weight - before["output.weight"]).abs().max().item()
    body_move = (model.linear.weight - before["linear.weight"]).abs().max().item()
    assert head_move < 1e-5 < 0.05 < body_move


def _one_step(opt_factory):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    g = torch.randn(5)
    start = p.detach().clone()
    opt = opt_factory([{"params": [p], "lr": 0.1, "weight_decay": 0.0}])
    p.grad = g.clone()
    opt.step()
    return start, g, p.detach()


def test_adamw_with_bias_correction_is_torch_adamw():
    start, g, after = _one_step(lambda groups: build_optimizer(groups, eps=1e-6, bias_correction=True))
    assert isinstance(build_optimizer([torch.nn.Parameter(torch.zeros(1))]), torch.optim.AdamW)
    # bias-corrected first step: lr * g / (|g| + eps) ~ lr * sign(g)
    assert torch.allclose(after, start - 0.1 * g / (g.abs() + 1e-6), atol=1e-6)


def test_adamw_without_bias_correction_matches_bertadam_first_step():
    start, g, after = _one_step(lambda groups: build_optimizer(groups, eps=1e-6, bias_correction=False))
    m, v = 0.1 * g, 0.001 * g * g
    assert torch.allclose(after, start - 0.1 * m / (v.sqrt() + 1e-6), atol=1e-6)
    # ~3.16 x lr per coordinate, vs lr with bias correction
    assert (after - start).abs().max().item() == pytest.approx(0.1 * 0.1 / math.sqrt(0.001), rel=1e-3)


def test_adamw_without_bias_correction_decays_weights_decoupled():
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdamWNoBiasCorrection([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 * 0.5))
