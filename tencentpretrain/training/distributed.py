"""Where this process runs: single CPU/GPU, torchrun, or TencentPretrain's --world_size/--gpu_ranks.

TencentPretrain semantics for spawning: `--world_size` is the total number of processes over all
nodes, `--gpu_ranks` lists the global ranks hosted on this node (one process each; process i uses
local GPU i), `--master_ip` is the rendezvous address (tcp://host:port). Without GPUs the same
flags start CPU processes that talk over gloo.
"""
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tencentpretrain.errors import UserError, describe_os_error


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = None  # None: not distributed

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.backend is not None


def _device_for(local_rank):
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _default_backend(backend):
    return backend or ("nccl" if torch.cuda.is_available() else "gloo")


def under_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def is_launcher():
    """True in the process that owns the run's outputs (locks, cleans): the one started by the user,
    or global rank 0 under torchrun (which starts every rank the same way)."""
    return not under_torchrun() or os.environ["RANK"] == "0"


def init_torchrun(backend=None):
    """Join the process group that torchrun set up through RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _device_for(local_rank)
    if world_size == 1:
        return DistEnv(device=device)
    backend = _default_backend(backend)
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world_size, local_rank, device, backend)


def init_single():
    return DistEnv(device=_device_for(0))


def _share_cpu_threads(procs_on_node):
    """CPU processes on one node split its cores: OpenMP threads that outnumber the cores spin
    against each other and make element-wise kernels tens of times slower."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_on_node))


def init_spawned(proc_id, gpu_ranks, world_size, master_ip, backend=None):
    rank = gpu_ranks[proc_id]
    device = _device_for(proc_id)
    if device.type == "cpu":
        _share_cpu_threads(len(gpu_ranks))
    backend = _default_backend(backend)
    dist.init_process_group(backend, init_method=master_ip, rank=rank, world_size=world_size,
                            device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world_size, proc_id, device, backend)


def check_spawn_args(world_size, gpu_ranks, master_ip):
    if world_size < 1:
        raise UserError(f"--world_size {world_size} must be at least 1")
    if world_size > 1 and not gpu_ranks:
        raise UserError(f"--world_size {world_size} needs --gpu_ranks (the global ranks to run on this "
                        f"node, e.g. --gpu_ranks {' '.join(map(str, range(world_size)))})")
    if gpu_ranks and (len(set(gpu_ranks)) != len(gpu_ranks) or not all(0 <= r < world_size for r in gpu_ranks)):
        raise UserError(f"--gpu_ranks {gpu_ranks} must be distinct ranks in [0, {world_size - 1}]")
    if gpu_ranks and torch.cuda.is_available() and len(gpu_ranks) > torch.cuda.device_count():
        raise UserError(f"--gpu_ranks lists {len(gpu_ranks)} processes but this node has "
                        f"{torch.cuda.device_count()} GPUs")
    if not master_ip.startswith(("tcp://", "file://", "env://")):
        raise UserError(f"--master_ip {master_ip!r} must look like tcp://host:port")


def _spawned_main(proc_id, fn, gpu_ranks, world_size, master_ip, backend):
    env = init_spawned(proc_id, gpu_ranks, world_size, master_ip, backend)
    status = None  # None: an unexpected exception, which torch.multiprocessing reports to the parent
    try:
        fn(env)
        status = 0
    except (UserError, OSError, RuntimeError) as err:
        message = err if isinstance(err, UserError) else describe_os_error(err)  # as run_cli says it
        if message is None:
            raise
        # Errors that every rank hits together (a non-finite loss is all-reduced) are said once.
        if env.is_main or not getattr(err, "same_on_all_ranks", False):
            where = "" if env.is_main else f" (rank {env.rank})"
            print(f"error{where}: {message}", file=sys.stderr, flush=True)
        status = 2
    finally:
        shutdown(env, clean=status == 0)
    _exit_process(status)


def shutdown(env, clean=True):
    """Leave the process group. After a clean run every rank first meets at a barrier, so no peer is
    still inside a collective when this rank's connections close."""
    if not dist.is_initialized():
        return
    if clean and env.distributed:
        dist.barrier()
    dist.destroy_process_group()


def _exit_process(status):
    """End a spawned process without interpreter finalization.

    Why: once DistributedDataParallel has used a gloo group, a reference to it stays behind inside
    torch, so destroy_process_group() does not stop its worker threads and they outlive it. A
    worker that drops the last reference to a finished collective (all_gather_object's tensors) has
    to take the GIL to free them; if the main thread has meanwhile begun finalizing the interpreter,
    Python ends that thread with a forced unwind and C++ calls std::terminate ("terminate called
    without an active exception", SIGABRT; one run of tests/test_train_ddp.py in six). Exit handlers run
    here, while the interpreter is fully alive; then os._exit skips the finalization the race needs.
    """
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to lose
            pass
    os._exit(status)


def run(fn, world_size=1, gpu_ranks=(), master_ip="tcp://localhost:12345", backend=None):
    """Call `fn(env)` once per process of this node: under torchrun, in spawned processes for
    --world_size > 1 (or a --gpu_ranks list), or in this process."""
    if under_torchrun():
        if world_size > 1:
            raise UserError("--world_size/--gpu_ranks and torchrun both start processes; use one of them")
        env = init_torchrun(backend)
        clean = False
        try:
            result = fn(env)
            clean = True
            return result
        finally:
            shutdown(env, clean)
    gpu_ranks = list(gpu_ranks or [])
    check_spawn_args(world_size, gpu_ranks, master_ip)
    if world_size == 1:
        return fn(init_single())
    try:
        mp.spawn(_spawned_main, args=(fn, gpu_ranks, world_size, master_ip, backend), nprocs=len(gpu_ranks))
    except mp.ProcessExitedException as err:
        # The child already printed its error; pass its exit status on.
        sys.exit(err.exit_code if err.exit_code and err.exit_code > 0 else 1)


def all_reduce_sum(tensor, env):
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj, env):
    """Small picklable values from every rank (RNG and loader state for the checkpoint)."""
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
