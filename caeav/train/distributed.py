"""PyTorch DDP plumbing: process-group set-up under `torchrun`, and `caeav train --devices N` re-launching itself
through `torch.distributed.run`.

Under torchrun every process reads RANK / WORLD_SIZE / LOCAL_RANK from the environment; GPUs use NCCL (one device per
local rank), CPUs use gloo. Multi-node: start `torchrun --nnodes ... -m caeav.cli.main train ...` on every node
yourself (then `--devices` is ignored); `--devices N` is the single-node shortcut.

Ctrl-C in a terminal reaches every process of the group (the launcher, torchrun and each rank); torchrun passes it on
once more, which `caeav.train.interrupt` counts as one request. A SIGTERM sent to the launcher alone is passed on to
torchrun, which passes it to the ranks; the launcher then waits for them to save `last/` (`STOP_WAIT_S`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from caeav.errors import Terminated

LAUNCHED = "CAEAV_DDP_LAUNCHER"  # set for the ranks `launch` starts: their launcher reports a stop, not they
STOP_WAIT_S = 90  # torchrun gives its ranks 30 s after passing a signal on, then kills them

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup(device: str | None = None) -> DistInfo:
    """Join the process group when started by torchrun; pick the device (cuda:LOCAL_RANK, or `device`)."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return DistInfo(device=dev)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank if `flag` is True on some rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_across(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reports_stop() -> bool:
    """Whether this process tells the user how to resume a stopped run: a single process, the `--devices`
    launcher, or rank 0 of a torchrun the user started; not the ranks `launch` started."""
    if not under_torchrun():
        return True
    return os.environ.get(LAUNCHED) != "1" and os.environ.get("RANK") == "0"


def launch(devices: int, argv: list[str]) -> int:
    """Run `caeav <argv>` in `devices` processes through torch.distributed.run (single node); returns its exit code.
    Interrupted, it lets the ranks stop cleanly (module docstring) and re-raises."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
           "-m", "caeav.cli.main", *argv]
    env = dict(os.environ, **{LAUNCHED: "1"})
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt as stop:
        if isinstance(stop, Terminated):  # a SIGTERM for the launcher alone; a Ctrl-C reached the ranks already
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_WAIT_S)
        raise
