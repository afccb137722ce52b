"""Two CPU processes under DDP (gloo, spawned through --world_size/--gpu_ranks) make the same update as
one process on the same global batch."""
import functools
import os
import socket

import pytest
import torch

from tencentpretrain.training import TrainConfig, Trainer
from tencentpretrain.training import distributed
from tencentpretrain.training.toy import ToyLoader, ToyModel


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(env, out, batch_size, accumulation_steps):
    torch.manual_seed(env.rank * 1000)  # different inits: DDP must broadcast rank 0's weights
    model = ToyModel()
    if env.rank == 0:
        torch.save(model.state_dict(), os.path.join(out, "init.pt"))
    cfg = TrainConfig(total_steps=3, learning_rate=1e-2, warmup=0.0, report_steps=1,
                      accumulation_steps=accumulation_steps, save_checkpoint_steps=2,
                      output_model_path=os.path.join(out, "m.bin"))
    loader = ToyLoader(batch_size=batch_size, rank=env.rank, world_size=env.world_size)
    Trainer(model, loader, cfg, env=env).fit()


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_two_processes_match_one_process(tmp_path, capfd, accumulation_steps):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir(), single_dir.mkdir()
    # per process and micro-batch: 4 / (2 ranks * accumulation) rows; one process takes all 4 at once
    distributed.run(functools.partial(train, out=str(ddp_dir), batch_size=4 // (2 * accumulation_steps),
                                      accumulation_steps=accumulation_steps),
                    world_size=2, gpu_ranks=[0, 1], master_ip=f"tcp://127.0.0.1:{free_port()}")
    logs = capfd.readouterr().out

    torch.manual_seed(0)
    model = ToyModel()
    model.load_state_dict(torch.load(ddp_dir / "init.pt", weights_only=True))
    cfg = TrainConfig(total_steps=3, learning_rate=1e-2, warmup=0.0, report_steps=1)
    Trainer(model, ToyLoader(batch_size=4), cfg, log=lambda *a, **k: None).fit()

    ddp_sd = torch.load(ddp_dir / "m.bin", weights_only=True)
    assert set(ddp_sd) == set(model.state_dict())  # no "module." prefix
    for key, value in model.state_dict().items():
        assert torch.allclose(ddp_sd[key], value, atol=1e-6), key
    state = torch.load(ddp_dir / "m.bin-2.state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert logs.count("| step 1/3") == 1  # rank 0 reports alone
    assert "2 processes (gloo) on cpu" in logs


def test_spawn_arguments_are_checked():
    from tencentpretrain.errors import UserError
    with pytest.raises(UserError, match="needs --gpu_ranks"):
        distributed.run(print, world_size=2)
    with pytest.raises(UserError, match=r"distinct ranks in \[0, 1\]"):
        distributed.run(print, world_size=2, gpu_ranks=[0, 2])
    with pytest.raises(UserError, match="tcp://host:port"):
        distributed.run(print, world_size=2, gpu_ranks=[0, 1], master_ip="localhost:1234")


def _exit_handler_then(env, out, fail_rank=None):
    import atexit
    atexit.register(lambda: open(os.path.join(out, f"atexit-{env.rank}"), "w").close())
    print(f"rank {env.rank} unflushed", end="")  # written out by the exit path, not lost with os._exit
    if env.rank == fail_rank:
        from tencentpretrain.errors import UserError
        raise UserError("bad input on one rank")


def test_spawned_processes_exit_cleanly(tmp_path, capfd):
    """Spawned processes end through distributed._exit_process: exit handlers run, output is flushed,
    and a UserError on one rank becomes exit status 2 of the whole run with its message printed."""
    distributed.run(functools.partial(_exit_handler_then, out=str(tmp_path)), world_size=2, gpu_ranks=[0, 1],
                    master_ip=f"tcp://127.0.0.1:{free_port()}")
    assert sorted(os.listdir(tmp_path)) == ["atexit-0", "atexit-1"]
    out = capfd.readouterr().out
    assert "rank 0 unflushed" in out and "rank 1 unflushed" in out

    with pytest.raises(SystemExit) as exc:
        distributed.run(functools.partial(_exit_handler_then, out=str(tmp_path), fail_rank=1), world_size=2,
                        gpu_ranks=[0, 1], master_ip=f"tcp://127.0.0.1:{free_port()}")
    assert exc.value.code == 2
    assert "error (rank 1): bad input on one rank" in capfd.readouterr().err
