"""--zero_optimizer: optimizer-state sharding over two CPU processes (gloo). The sharded run's weights and
checkpoints equal an unsharded run's, a resume is exact (also when switching sharding on), each rank
holds the optimizer state of its share only, and WID's compactor group keeps its own learning rate."""
import functools
import os

import pytest
import torch

from test_train_ddp import free_port
from tencentpretrain.config import load_model_config
from tencentpretrain.model_builder import build_model
from tencentpretrain.training import TrainConfig, Trainer, distributed, zero
from tencentpretrain.training.pretrain import build_parser, train_config_from_args
from tencentpretrain.training.toy import ToyLoader, ToyModel
from tencentpretrain.wid import build_wid_plugin

WID = {"emb_size": 16, "hidden_size": 16, "heads_num": 2, "feedforward_size": 32, "layers_num": 1,
       "max_seq_length": 8, "vocab_size": 32, "dropout": 0.1, "tie_weights": True, "embedding": ["word", "pos", "seg"],
       "encoder": "wid_transformer", "target": ["wid_mlm"],
       "wid": {"target_hidden_size": 8, "w_step": 2, "compactor_learning_rate": 5e-3}}


def toy_trainer(env, out, zero_optimizer, total_steps=4):
    torch.manual_seed(0)
    cfg = TrainConfig(total_steps=total_steps, learning_rate=1e-2, warmup=0.25, report_steps=100,
                      accumulation_steps=2, save_checkpoint_steps=2, output_model_path=out, seed=3,
                      zero_optimizer=zero_optimizer)
    # dropout makes the run depend on the RNG state; accumulation on the loader position
    return Trainer(ToyModel(dropout=0.2), ToyLoader(batch_size=2, rank=env.rank, world_size=env.world_size, seed=5),
                   cfg, env=env, log=lambda *a, **k: None)


def wid_trainer(env, zero_optimizer):
    cfg = load_model_config(None, WID)
    torch.manual_seed(0)
    model = build_model(cfg)
    callbacks, claims = build_wid_plugin(model, cfg)
    train_cfg = TrainConfig(total_steps=3, learning_rate=1e-3, warmup=0.0, scheduler="constant_with_warmup",
                            report_steps=100, seed=3, zero_optimizer=zero_optimizer)
    return Trainer(model, ToyLoader(batch_size=2, rank=env.rank, world_size=env.world_size), train_cfg, env=env,
                   callbacks=callbacks, claims=claims, log=lambda *a, **k: None)


def dump(trainer, path):
    """This rank's final weights and what its optimizer state holds."""
    torch.save({"weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                "state_bytes": zero.held_state_bytes(trainer.optimizer),
                "state_entries": len(trainer.optimizer.state),
                "expected_bytes": zero.state_bytes_per_rank(trainer.model.parameters(),
                                                            trainer.optimizer.param_groups, trainer.env.world_size),
                "groups": {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}}, path)


def two_ranks(env, out):
    """Every leg of the test in one pair of processes (a spawn costs seconds)."""
    def leg(name, trainer, resume=None):
        if resume:
            trainer.resume(os.path.join(out, resume))
        trainer.fit()
        dump(trainer, os.path.join(out, f"{name}-rank{env.rank}.pt"))

    leg("plain", toy_trainer(env, os.path.join(out, "plain", "m.bin"), False))
    leg("zero", toy_trainer(env, os.path.join(out, "zero", "m.bin"), True))
    # 2 steps, then resume from the sharded step-2 checkpoint (and from the unsharded one) for 2 more
    leg("zero_resumed", toy_trainer(env, os.path.join(out, "zero_resumed", "m.bin"), True),
        resume=os.path.join("zero", "m.bin-2"))
    leg("switched_on", toy_trainer(env, os.path.join(out, "switched_on", "m.bin"), True),
        resume=os.path.join("plain", "m.bin-2"))
    leg("wid_plain", wid_trainer(env, False))
    leg("wid_zero", wid_trainer(env, True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero")
    for name in ("plain", "zero", "zero_resumed", "switched_on"):
        (out / name).mkdir()
    distributed.run(functools.partial(two_ranks, out=str(out)), world_size=2, gpu_ranks=[0, 1],
                    master_ip=f"tcp://127.0.0.1:{free_port()}")

    def load(name, rank=0):
        return torch.load(out / f"{name}-rank{rank}.pt", weights_only=True)
    return out, load


def assert_same_weights(a, b, what):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs by {(a[key] - b[key]).abs().max():.3g}"


def test_sharded_weights_equal_unsharded_bit_for_bit(runs):
    out, load = runs
    for rank in (0, 1):  # every rank ends the step with the same weights
        assert_same_weights(load("zero", rank)["weights"], load("plain")["weights"], f"rank {rank}")
    sharded = torch.load(out / "zero" / "m.bin-4.state.pt", weights_only=True)["optimizer"]
    plain = torch.load(out / "plain" / "m.bin-4.state.pt", weights_only=True)["optimizer"]
    # the same format as an unsharded checkpoint: every parameter's state, gathered on rank 0
    assert sharded["param_groups"] == plain["param_groups"]
    assert list(sharded["state"]) == list(plain["state"]) == list(range(7))
    for i, state in plain["state"].items():
        for key, value in state.items():
            assert torch.equal(sharded["state"][i][key], value), (i, key)


def test_resume_of_a_sharded_run_is_exact(runs):
    out, load = runs
    assert_same_weights(load("zero_resumed")["weights"], load("zero")["weights"], "2 + resume + 2 steps")
    a = torch.load(out / "zero_resumed" / "m.bin-4.state.pt", weights_only=True)["optimizer"]["state"]
    b = torch.load(out / "zero" / "m.bin-4.state.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(a[i][k], b[i][k]) for i in b for k in b[i])
    # an unsharded checkpoint resumed with sharding switched on continues as the unsharded run
    assert_same_weights(load("switched_on")["weights"], load("plain")["weights"], "switched on at resume")


def test_each_rank_holds_the_state_of_its_share_only(runs):
    _, load = runs
    plain, ranks = load("plain"), [load("zero", r) for r in (0, 1)]
    # The toy model's 7 parameters in optimizer order have 512, 256, 512 | 16, 16, 16, 32 values: largest
    # first to the less loaded rank gives rank 0 the 512 + 256 and rank 1 the other 512 and the four small.
    assert plain["state_entries"] == 7
    assert [r["state_entries"] for r in ranks] == [2, 5]
    assert sum(r["state_bytes"] for r in ranks) == plain["state_bytes"]
    weights_and_grads = 8 * 1360  # fp32 weight + gradient of all 1,360 values, on every rank
    assert plain["expected_bytes"] == ranks[0]["expected_bytes"]  # the assignment depends on shapes only
    for rank, r in enumerate(ranks):
        # the real state tensors: two fp32 moments of the share (as the benchmark counts) + a 4-byte step each
        assert r["state_bytes"] - 4 * r["state_entries"] == r["expected_bytes"][rank] - weights_and_grads
        assert r["state_bytes"] - 4 * r["state_entries"] == 8 * (768, 592)[rank]
    # resumed: the full state loaded from the checkpoint was cut to this rank's share again
    assert [load("zero_resumed", r)["state_entries"] for r in (0, 1)] == [2, 5]


def test_wid_compactor_group_keeps_its_learning_rate_under_sharding(runs):
    _, load = runs
    for rank in (0, 1):
        assert_same_weights(load("wid_zero", rank)["weights"], load("wid_plain")["weights"], f"WID rank {rank}")
    groups = load("wid_zero")["groups"]
    assert groups["wid_compactor"] == 5e-3 and groups["default"] == groups["default_no_decay"] == 1e-3
    entries = [load("wid_zero", r)["state_entries"] for r in (0, 1)]
    assert sum(entries) == load("wid_plain")["state_entries"] and min(entries) > 0


def test_one_process_is_a_noted_no_op(tmp_path):
    lines = []
    torch.manual_seed(0)
    cfg = TrainConfig(total_steps=2, learning_rate=1e-2, report_steps=100, zero_optimizer=True)
    sharded = Trainer(ToyModel(), ToyLoader(), cfg, log=lambda line, **k: lines.append(line))
    sharded.fit()
    assert sharded.sharder is None
    assert any("--zero_optimizer has no effect in a single process" in line for line in lines)
    torch.manual_seed(0)
    plain = Trainer(ToyModel(), ToyLoader(), TrainConfig(total_steps=2, learning_rate=1e-2, report_steps=100),
                    log=lambda *a, **k: None)
    plain.fit()
    assert_same_weights(sharded.model.state_dict(), plain.model.state_dict(), "one process")


def test_assignment_balances_sizes_and_counts_bytes():
    assert zero.assign([512, 16, 512, 256, 32], 2) == [0, 1, 1, 0, 1]
    assert zero.assign([5, 5, 5], 1) == [0, 0, 0]
    weight, bias = torch.nn.Parameter(torch.zeros(10, 10)), torch.nn.Parameter(torch.zeros(10))
    frozen = torch.zeros(20)
    groups = [{"params": [weight]}, {"params": [bias]}]
    # weights everywhere, gradients of trained ones everywhere, Adam's moments with the owner
    assert zero.state_bytes_per_rank([weight, bias, frozen], groups, 1) == [4 * (110 * 4 + 20)]
    assert zero.state_bytes_per_rank([weight, bias, frozen], groups, 2) == [4 * (110 * 2 + 200 + 20),
                                                                            4 * (110 * 2 + 20 + 20)]


def test_the_flag_reaches_the_training_config():
    base = ["--dataset_path", "d.tpd", "--output_model_path", "m.bin"]
    assert train_config_from_args(build_parser().parse_args(base + ["--zero_optimizer"])).zero_optimizer
    assert not train_config_from_args(build_parser().parse_args(base)).zero_optimizer
