"""The GPU path, checked where CI runs (the CPU) and, where there is one, on a CUDA GPU.

The precision policy (``train/precision.py``) makes ``trainer.amp=true trainer.channels_last=true`` the same
arithmetic on every device, so these tests run on the CPU what a GPU runs: bf16 convolutions inside a vmapped
stack (which crashed in functorch's batch-norm rule under CUDA autocast), every loss, FixMatch and the
majority-only detector. Each test that takes ``device`` runs on the CPU in CI and again on CUDA under
``pytest -m cuda`` (skipped without a GPU; ``scripts/gpu_check.sh`` runs them)."""

import logging

import pytest
import torch
from conftest import REPO, TINY, compose_run, run_in_process
from test_ssl import SSL

from imbalance_lab import checkpoint, run
from imbalance_lab.losses import build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.models import build_model
from imbalance_lab.run import Job, run_stack
from imbalance_lab.schema import OptimConfig, TrainerConfig
from imbalance_lab.train import Member, Precision
from imbalance_lab.train.stack import LoopEngine, VmapEngine
from imbalance_lab.train.sync import HostSyncCheck

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
GPU_POLICY = ["trainer.amp=true", "trainer.channels_last=true"]
LOSS_OPTIONS = sorted(p.stem for p in (REPO / "configs" / "loss").glob("*.yaml"))
# Numbers that differ between two ways of running the same run: times, and the stack's own description.
TIMES = {"wall_seconds", "train_seconds", "train_images_per_s", "resumed_from_epoch", "stack"}


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMES} | {
        "history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in metrics["history"]]}


class Recorder(torch.utils._python_dispatch.TorchDispatchMode):
    """The dtypes and layouts that reach the convolution and batch-norm kernels."""

    def __init__(self):
        super().__init__()
        self.convolutions, self.norms = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "convolution":
            x, w = args[0], args[1]
            self.convolutions.append((x.dtype, w.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        elif "batch_norm" in name and "backward" not in name:
            self.norms.append((args[0].dtype, *(a.dtype for a in args[1:5] if isinstance(a, torch.Tensor))))
        return func(*args, **(kwargs or {}))


def stack_of(model_name: str, device: str, k: int = 3) -> list[Member]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        loss_fn = build_loss(CELossConfig(), [60, 30, 10]).to(device)
        model = build_model(model_name, 3, 3, [0.5] * 3, [0.25] * 3, make_head=loss_fn.make_head).to(device)
        out.append(Member(model, loss_fn, torch.Generator(device).manual_seed(seed)))
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_name", ["cnn_small", "resnet32", "wrn28_2"])
def test_both_engines_compute_convolutions_in_bf16_and_batch_norm_in_float32(device, model_name):
    """A step of a stack of 3 under trainer.amp=true trainer.channels_last=true, vmapped and member by member:
    the arithmetic that crashed under CUDA autocast (bf16 convolutions inside vmap meeting float32 BatchNorm
    statistics). Both engines hand bf16 inputs and weights to every convolution, channels-last input to the
    first, float32 to every batch norm, and take the same first step (to bf16 rounding)."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=g).to(device),
                torch.randint(0, 3, (8,), generator=g).to(device)) for _ in range(3)]
    trainer, optim = TrainerConfig(device=device), OptimConfig(name="adam")
    losses = {}
    for engine_class in (LoopEngine, VmapEngine):
        engine = engine_class(stack_of(model_name, device), trainer, optim, 10, 1, Precision(True, True))
        for m in engine.members:
            m.model.train()
        with Recorder() as seen:
            losses[engine_class.name] = torch.stack(engine.step(batches, [True] * 3))
        assert seen.convolutions and all(x == w == torch.bfloat16 for x, w, _ in seen.convolutions)
        assert seen.convolutions[0][2], "the first convolution's input is not channels-last"
        assert seen.norms and all(set(dtypes) == {torch.float32} for dtypes in seen.norms)
        assert torch.isfinite(losses[engine_class.name]).all()
    torch.testing.assert_close(losses["vmap"], losses["loop"], rtol=2e-2, atol=0)


def stacked_runs(folder, method: str, device: str, stacking: str, amp: bool, channels_last: bool) -> list[dict]:
    """Seeds 0, 1, 2 of a tiny supervised or FixMatch run, 2 epochs, trained as one stack."""
    jobs = []
    for seed in (0, 1, 2):
        cfg, resolved, option = compose_run(*(SSL if method == "fixmatch" else TINY), "trainer.epochs=2",
                                            f"trainer.device={device}", f"trainer.stacking={stacking}",
                                            f"trainer.amp={amp}", f"trainer.channels_last={channels_last}",
                                            f"seed={seed}")
        jobs.append(Job(cfg, folder / str(seed), resolved, option))
    return run_stack(jobs)


@pytest.fixture(scope="module")
def float32_loop(tmp_path_factory):
    """The reference: each (method, device)'s stack in float32, contiguous, member by member."""
    cache = {}

    def reference(method: str, device: str) -> list[dict]:
        if (method, device) not in cache:
            folder = tmp_path_factory.mktemp(f"fp32_{method}_{device}")
            cache[method, device] = stacked_runs(folder, method, device, "loop", False, False)
        return cache[method, device]

    return reference


# On the CPU the GPU's default (bf16 + channels_last) in both engines; on CUDA every combination.
SETTINGS = [pytest.param(device, stacking, amp, channels_last,
                         marks=[pytest.mark.cuda] if device == "cuda" else [],
                         id=f"{device}-{stacking}-{'bf16' if amp else 'fp32'}{'-channels_last' if channels_last else ''}")
            for device in ("cpu", "cuda") for stacking in ("loop", "vmap") for amp in (False, True)
            for channels_last in (False, True)
            if device == "cuda" or (amp and channels_last)]


@pytest.mark.parametrize("method", ["supervised", "fixmatch"])
@pytest.mark.parametrize("device, stacking, amp, channels_last", SETTINGS)
def test_every_engine_and_precision_matches_the_float32_loop(tmp_path, float32_loop, method, device, stacking, amp,
                                                             channels_last):
    """A stack of 3 seeds, 2 epochs, supervised or FixMatch: each run finishes done, with every epoch's
    training loss within 3 % of the float32 loop's and the test macro F1 within 0.05. bf16 rounds at ~0.4 %,
    and the engines sum in different orders (one grouped convolution vs three), so neither is bitwise equal
    (measured on the CPU: at most 1 %); test_stack.py compares the float32 engines to 1e-3."""
    reference = float32_loop(method, device)
    runs = stacked_runs(tmp_path, method, device, stacking, amp, channels_last)
    for ours, theirs in zip(runs, reference):
        assert ours["status"] == theirs["status"] == "done", (ours["reason"], theirs["reason"])
        assert ours["stack"]["engine"] == stacking
        assert ours["device"]["compute_dtype"] == ("bfloat16" if amp else "float32")
        assert ours["device"]["channels_last"] is channels_last
        assert [h["loss"] for h in ours["history"]] == pytest.approx([h["loss"] for h in theirs["history"]],
                                                                      rel=3e-2)
        assert abs(ours["test"]["macro_f1"] - theirs["test"]["macro_f1"]) <= 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_every_loss_and_the_majority_only_detector_finish_under_the_gpu_policy(tmp_path, device):
    runs = {option: [f"loss={option}"] for option in LOSS_OPTIONS}
    runs["majority_only"] = ["method=majority_only", "data.synthetic.num_classes=2", "data.profile=reduce",
                             "data.reduced_classes=[1]"]
    for name, overrides in runs.items():
        metrics = run_in_process(tmp_path / name, *TINY, *GPU_POLICY, f"trainer.device={device}", *overrides)
        assert metrics["status"] == "done", (name, metrics["reason"])
        assert metrics["device"]["compute_dtype"] == "bfloat16"
    assert len(runs) == 14


# ----------------------------------------------------------------------------- device-free files
RESUMED = [*TINY, *GPU_POLICY, "trainer.epochs=4", "trainer.checkpoint_every=2", "loss=debiased",
           "data.val_fraction=0.2"]


def stopped_after_first_checkpoint(folder, monkeypatch, *overrides):
    """A run stopped right after writing its first checkpoint: on disk what a kill there leaves."""
    save = checkpoint.save

    def save_then_stop(out_dir, state):
        save(out_dir, state)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run_in_process(folder, *overrides)
    assert (folder / checkpoint.CHECKPOINT).exists() and not (folder / "metrics.json").exists()


def locations(path) -> set[str]:
    """Where each tensor storage in a file was saved from (the location tag torch.save wrote)."""
    found = set()
    torch.load(path, map_location=lambda storage, location: found.add(location) or storage, weights_only=True)
    return found


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoints_and_final_weights_hold_cpu_tensors_and_resume_equal(tmp_path, monkeypatch, device):
    overrides = [*RESUMED, f"trainer.device={device}"]
    stopped_after_first_checkpoint(tmp_path / "resumed", monkeypatch, *overrides)
    assert locations(tmp_path / "resumed" / checkpoint.CHECKPOINT) == {"cpu"}
    state = torch.load(tmp_path / "resumed" / checkpoint.CHECKPOINT, weights_only=True)
    assert state["generator"].device.type == "cpu" and state["device"] == device
    resumed = run_in_process(tmp_path / "resumed", *overrides)
    alone = run_in_process(tmp_path / "alone", *overrides)
    assert resumed["resumed_from_epoch"] == 2 and resumed["resumed_from_device"] is None
    assert locations(tmp_path / "resumed" / checkpoint.FINAL_WEIGHTS) == {"cpu"}
    if device == "cpu":
        assert comparable(resumed) == comparable(alone)
    else:  # CUDA kernels need not be bitwise reproducible from run to run
        assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in alone["history"]],
                                                                        rel=1e-2)
        assert abs(resumed["test"]["macro_f1"] - alone["test"]["macro_f1"]) <= 0.05


def test_a_checkpoint_written_from_gpu_tensors_resumes_on_the_cpu_equal(tmp_path, monkeypatch):
    """The checkpoint re-written with every storage tagged ``cuda:0``, byte for byte what ``torch.save`` writes
    for GPU tensors. Loading it as written needs a GPU; the run loads it onto the CPU and ends as the
    uninterrupted run. (What this cannot show: a real CUDA generator state, whose Philox state cannot
    continue on the CPU — the next test — and CUDA's own numbers, which test_checkpoints_... checks on a GPU.)"""
    folder = tmp_path / "resumed"
    stopped_after_first_checkpoint(folder, monkeypatch, *RESUMED)
    state = torch.load(folder / checkpoint.CHECKPOINT, weights_only=True)
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, folder / checkpoint.CHECKPOINT)
    assert locations(folder / checkpoint.CHECKPOINT) == {"cuda:0"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(folder / checkpoint.CHECKPOINT, weights_only=True)
    resumed = run_in_process(folder, *RESUMED)
    alone = run_in_process(tmp_path / "alone", *RESUMED)
    assert resumed["resumed_from_epoch"] == 2
    assert comparable(resumed) == comparable(alone)


def test_a_checkpoint_from_another_device_type_continues_with_a_reseeded_generator(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "resumed"
    stopped_after_first_checkpoint(folder, monkeypatch, *RESUMED)
    state = torch.load(folder / checkpoint.CHECKPOINT, weights_only=True)
    state["device"], state["generator"] = "cuda", torch.zeros(16, dtype=torch.uint8)  # a Philox state
    torch.save(state, folder / checkpoint.CHECKPOINT)
    with caplog.at_level(logging.WARNING):
        resumed = run_in_process(folder, *RESUMED)
    assert resumed["status"] == "done" and resumed["resumed_from_epoch"] == 2
    assert resumed["resumed_from_device"] == "cuda"
    assert "written on cuda and continues on cpu" in caplog.text


def test_deterministic_algorithms_are_set_for_a_cpu_run_and_restored_after_it(tmp_path):
    seen = []
    fit = run.fit_stack

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return fit(*args, **kwargs)

    before = torch.are_deterministic_algorithms_enabled()
    try:
        run.fit_stack = spy
        run_in_process(tmp_path, *TINY)
    finally:
        run.fit_stack = fit
    assert seen == [True] and torch.are_deterministic_algorithms_enabled() == before


# ----------------------------------------------------------------------------- no host sync in the step loop
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["supervised", "fixmatch"])
def test_the_step_loop_never_waits_for_the_device(tmp_path, device, method):
    """trainer.sync_check=true: any host sync inside the step loop raises (CUDA: PyTorch's sync debug mode;
    CPU: the operators that sync on CUDA). The FixMatch step draws RandAugment and updates the pseudo-label
    counts; DRW switches on in the supervised run's second epoch."""
    overrides = [*(SSL if method == "fixmatch" else [*TINY, "loss=ldam_drw", "loss.drw_epoch=2"]),
                 *GPU_POLICY, "trainer.epochs=2", "trainer.sync_check=true", f"trainer.device={device}"]
    metrics = run_in_process(tmp_path, *overrides)
    assert metrics["status"] == "done", metrics["reason"]


def test_the_cpu_sync_check_catches_what_would_wait_for_a_gpu():
    x = torch.tensor([0, 2, 2])
    for would_sync in (lambda: torch.bincount(x), lambda: x.sum().item(), lambda: x[x > 0],
                       lambda: x.index_put_((x > 1,), x[0]), lambda: x.nonzero(), lambda: torch.tensor([0.5, 1.0])):
        with pytest.raises(RuntimeError, match="waits for the device"), HostSyncCheck():
            would_sync()
    with HostSyncCheck():  # fixed-size counting, as the FixMatch diagnostics do it
        torch.zeros(3).index_add_(0, x, torch.ones(3))
        torch.optim.Adam([torch.nn.Parameter(torch.ones(2))]).step()  # step counters live on the host
