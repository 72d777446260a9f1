"""trainer.compile: the forward pass compiled by torch.compile (inductor, which on the CPU builds C++ with the
machine's compiler), in both engines, under the GPU precision policy. Its own file: compiling takes ~20 s per
engine on one core, and pytest-xdist runs it beside the other files."""

import pytest
import torch
from conftest import TINY, compose_run
from test_gpu_path import DEVICES, GPU_POLICY
from torch._dynamo.utils import counters

from imbalance_lab.run import Job, run_stack


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stacking", ["loop", "vmap"])
def test_a_compiled_stack_trains_with_one_graph_and_no_graph_break(tmp_path, device, stacking):
    """Two seeds for 2 epochs with evaluation: every member runs the one compiled graph (the loop engine's
    members share it, the vmapped stack is one graph), with no graph break and no recompilation — the step
    shapes are fixed (the incomplete last batch is dropped) and evaluation runs the plain module."""
    torch._dynamo.reset()
    counters.clear()
    jobs = []
    for seed in (0, 1):
        cfg, resolved, option = compose_run(*TINY, *GPU_POLICY, "trainer.epochs=2", "trainer.compile=true",
                                            f"trainer.device={device}", f"trainer.stacking={stacking}",
                                            f"seed={seed}")
        jobs.append(Job(cfg, tmp_path / str(seed), resolved, option))
    try:
        results = run_stack(jobs)
        assert [r["status"] for r in results] == ["done", "done"]
        assert [r["stack"]["engine"] for r in results] == [stacking, stacking]
        assert counters["stats"]["unique_graphs"] == 1
        assert not counters["graph_break"]
    finally:
        torch._dynamo.reset()
