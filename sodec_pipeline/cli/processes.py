"""Spreading ``sodec eval``, ``compress`` and ``decompress`` over the processes of ``accelerate launch``.

Started by ``accelerate launch --num_processes N -m sodec_pipeline COMMAND ...`` (``WORLD_SIZE`` > 1), each
process takes a contiguous share of the files (accelerate's ``PartialState.split_between_processes``), runs on
the device accelerate gives it (GPU i on a multi-GPU machine, the CPU with ``ACCELERATE_USE_CPU=1``), and the
results are gathered to every process (``accelerate.utils.gather_object``) in process order, so that joined
they are the one-process results in the one-process order. Started any other way, there is one process and
accelerate is not imported at all.
"""

import atexit
import os
from typing import Any, List, Optional, Sequence


#: Where the launchers put the number of processes: torchrun (and accelerate launch), then MPI's mpirun.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_processes() -> int:
    """How many processes ``accelerate launch`` (torchrun or mpirun) started for this run; 1 otherwise."""
    for name in WORLD_SIZE_VARIABLES:
        try:
            return max(1, int(os.environ[name]))
        except (KeyError, ValueError):
            continue
    return 1


class Processes:
    """This process's place among the processes of one run."""

    def __init__(self):
        self.state = None
        if launched_processes() > 1:
            import torch
            from accelerate import PartialState
            from accelerate.utils import parse_flag_from_env

            # As accelerate's Accelerator does: the CPU (gloo) when asked for or when there is no GPU.
            cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
            self.state = PartialState(cpu=cpu)
            # Tear the process group down together before the interpreter exits: a process that exits while
            # another still holds gloo connections to it can make that one abort after its work is done
            # ("terminate called without an active exception").
            atexit.register(_destroy_process_group)

    @property
    def num_processes(self) -> int:
        return self.state.num_processes if self.state else 1

    @property
    def index(self) -> int:
        return self.state.process_index if self.state else 0

    @property
    def is_main_process(self) -> bool:
        return self.index == 0

    def device(self, requested: Optional[str]) -> str:
        """``--device`` for this process: as given with one process (default cpu); with several, accelerate's
        device for this process unless ``cpu`` was asked for (``cuda`` alone means this process's GPU)."""
        if self.state is None:
            return requested or "cpu"
        if requested in (None, "cuda"):
            return str(self.state.device)
        return requested

    def share(self, items: Sequence) -> List:
        """This process's contiguous share of ``items`` (the earlier processes take one more when they do not
        divide evenly)."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def gather(self, value: Any) -> List[Any]:
        """``[value of process 0, value of process 1, ...]``, on every process."""
        if self.state is None:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no process closes its connections while another still uses them
        dist.destroy_process_group()
