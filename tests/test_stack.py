"""Stacked runs: K runs trained together, each as if alone (CPU). The stacked launcher end to end is in
test_sweeps.py (the grid sweep and its resume run through it)."""

import copy

import pytest
import torch
from conftest import TINY, compose_run, read_json

from hydra_plugins.imbalance_lab_launcher.stacked_launcher import stacks
from imbalance_lab.losses import build_loss
from imbalance_lab.losses.affinity import AffinityLossConfig
from imbalance_lab.losses.focal import FocalLossConfig
from imbalance_lab.models import build_model
from imbalance_lab.run import Job, run_experiment, run_stack, stack_key
from imbalance_lab.schema import OptimConfig, TrainerConfig
from imbalance_lab.train import Member, Precision, fit_stack
from imbalance_lab.train.augment import random_crop_flip
from imbalance_lab.train.stack import LoopEngine, VmapEngine, make_engine, vmap_obstacle

# Times and the stack's own description differ between a run alone and in a stack; nothing else may.
TIMING = {"wall_seconds", "train_seconds", "train_images_per_s", "stack"}


def members(loss_cfgs, seeds, model="cnn_small", channels=3):
    out = []
    for loss_cfg, seed in zip(loss_cfgs, seeds):
        torch.manual_seed(seed)
        loss_fn = build_loss(loss_cfg, [60, 30, 10])
        net = build_model(model, channels, 3, [0.5] * channels, [0.25] * channels, make_head=loss_fn.make_head)
        out.append(Member(net, loss_fn, torch.Generator().manual_seed(seed)))
    return out


def losses_of(engine, n_members: int, steps: int = 20) -> torch.Tensor:
    """(steps, members) training losses of ``engine`` on a fixed stream of random augmented batches."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (400, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (400,), generator=g)
    for m in engine.members:
        m.model.train()
    out = []
    for _ in range(steps):
        batches = []
        for _ in range(n_members):
            idx = torch.randint(0, 400, (16,), generator=g)
            batches.append((random_crop_flip(x[idx], generator=g), y[idx]))
        out.append(torch.stack(engine.step(batches, [True] * n_members)))
    return torch.stack(out)


def relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b).abs() / a.abs()).amax(dim=1)


def test_members_whose_models_differ_in_a_setting_are_not_vmapped():
    alike = members([AffinityLossConfig(sigma=10.0)] * 2, [0, 1])
    assert vmap_obstacle(alike) is None
    differ = members([AffinityLossConfig(sigma=s) for s in (5.0, 10.0)], [0, 1])  # sigma lives in the head
    assert vmap_obstacle(differ) == "the members' models differ in shape or settings"
    assert vmap_obstacle(members([AffinityLossConfig(m=m) for m in (1, 2)], [0, 1])) is not None


@pytest.mark.parametrize("loss_cfgs, seeds", [
    ([FocalLossConfig(gamma=0.0)] * 3, [0, 1, 2]),  # a table cell's seeds
    ([FocalLossConfig(gamma=g) for g in (0.0, 1.0, 2.0)], [0, 0, 0]),  # a hyperparameter grid
    ([AffinityLossConfig(lam=v) for v in (0.5, 0.75, 1.0)], [3, 4, 5]),  # a loss holding the model's head
], ids=["seeds", "gamma", "affinity"])
def test_vmapped_stack_steps_like_each_member_alone(loss_cfgs, seeds):
    """20 Adam steps on the same batches: the vmapped stack's per-step losses against each member's own
    loop. The first step agrees to float32 rounding; after it, the two differ by what any change of
    summation order gives in float32 on this chaotic problem (random labels, Adam's early sign-like steps):
    the plain loop on 1 vs 2 threads is the yardstick, measured here too."""
    trainer, optim = TrainerConfig(device="cpu"), OptimConfig(name="adam", lr=1e-3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = losses_of(LoopEngine(members(loss_cfgs, seeds), trainer, optim, 10, 2, Precision()), 3)
        torch.set_num_threads(2)
        loop = losses_of(LoopEngine(members(loss_cfgs, seeds), trainer, optim, 10, 2, Precision()), 3)
        stacked = members(loss_cfgs, seeds)
        vmap_engine = VmapEngine(stacked, trainer, optim, 10, 2, Precision())
        vmap = losses_of(vmap_engine, 3)
    finally:
        torch.set_num_threads(threads)
    assert relative(loop, vmap)[0] < 1e-5
    assert relative(loop, vmap).max() <= max(1e-4, 3 * relative(loop, one_thread).max())
    vmap_engine.to_members()  # the members' modules hold their trained weights and BatchNorm statistics
    for m in stacked:
        assert m.model.backbone.features[0][1].num_batches_tracked.item() == 20
        assert torch.isfinite(next(m.model.parameters())).all()


@pytest.fixture(scope="module")
def tiny_jobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    jobs = []
    for seed in (0, 1, 2):
        cfg, resolved, option = compose_run(*TINY, "trainer.epochs=2", f"seed={seed}")
        jobs.append(Job(cfg, root / f"stacked_{seed}", resolved, option))
    return root, jobs


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING} | {
        "history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}
                    for h in metrics["history"]]}


def test_a_stack_of_three_seeds_gives_each_run_its_result_alone(tiny_jobs):
    root, jobs = tiny_jobs
    stacked = run_stack(jobs)
    for job, metrics in zip(jobs, stacked):
        alone = run_experiment(job.cfg, root / f"alone_{job.cfg.seed}", job.resolved_config, job.loss_option)
        assert comparable(metrics) == comparable(alone)
        assert metrics["stack"]["size"] == 3 and alone["stack"]["size"] == 1
        files = sorted(p.name for p in job.out_dir.iterdir())
        assert files == sorted(p.name for p in (root / f"alone_{job.cfg.seed}").iterdir())
        assert read_json(job.out_dir / "metrics.json")["status"] == "done"


def test_a_vmapped_stack_of_three_gives_each_run_its_result_alone_within_half_a_point(tiny_jobs, tmp_path):
    root, jobs = tiny_jobs
    vjobs = []
    for job in jobs:
        cfg = copy.deepcopy(job.cfg)
        cfg.trainer.stacking = "vmap"
        vjobs.append(Job(cfg, tmp_path / str(cfg.seed), job.resolved_config, job.loss_option))
    for job, metrics in zip(vjobs, run_stack(vjobs)):
        assert metrics["stack"] == {"size": 3, "engine": "vmap", "runs": [str(j.out_dir) for j in vjobs]}
        alone = read_json(root / f"alone_{job.cfg.seed}" / "metrics.json")
        assert abs(metrics["test"]["macro_f1"] - alone["test"]["macro_f1"]) <= 0.005
        assert metrics["history"][0]["loss"] == pytest.approx(alone["history"][0]["loss"], rel=1e-3)


@pytest.mark.parametrize("stacking", ["loop", "vmap"])
def test_a_stack_continues_from_its_members_states_as_if_never_stopped(stacking):
    """fit_stack's checkpoint states (epoch 2 of 4) given back as ``resume``: every member ends with the
    same per-epoch losses and weights as the uninterrupted stack — the vmapped one too, whose stacked
    optimiser state is cut into the members' states and stacked again."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(96) % 3
    trainer = TrainerConfig(epochs=4, batch_size=16, checkpoint_every=2, device="cpu", progress=False,
                            stacking=stacking, bn_recalibration_batches=2)

    def run(resume=None, keep=None):
        stack = members([FocalLossConfig(gamma=1.0)] * 2, [0, 1])
        fit_stack(stack, x, y, trainer_cfg=trainer, optim_cfg=OptimConfig(name="adam"), augment=True,
                  checkpoint=None if keep is None else lambda epoch, states: keep.append(copy.deepcopy(states)),
                  resume=resume)
        return stack

    saved = []
    full = run(keep=saved)
    assert len(saved) == 1 and [s["epoch"] for s in saved[0]] == [2, 2]  # not after the last epoch
    resumed = run(resume=saved[0])
    for a, b in zip(full, resumed):
        assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
        for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(p, q), name


@pytest.mark.parametrize("stacking", ["loop", "vmap"])
def test_decay_norm_and_bias_false_spares_normalisation_weights_and_biases_in_either_engine(stacking):
    """Every parameter set to 1, then one SGD step of the engine's own optimiser(s) (lr 0.1, weight decay 0.5,
    no momentum) on zero gradients: weight decay alone moves a parameter, to 0.95. With
    optim.decay_norm_and_bias=false the BatchNorm weights and biases and the head's bias stay at 1; the conv
    and head weights decay either way."""
    decayed_always = {"backbone.features.0.0.weight", "backbone.features.2.0.weight",
                      "backbone.features.4.0.weight", "head.weight"}
    for decay_norm_and_bias in (True, False):
        stack = members([FocalLossConfig()] * 2, [0, 1])
        with torch.no_grad():
            for m in stack:
                for p in m.model.parameters():
                    p.fill_(1.0)
        optim = OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.5,
                            decay_norm_and_bias=decay_norm_and_bias)
        engine = make_engine(stack, TrainerConfig(device="cpu", stacking=stacking), optim, 10, 1, Precision())
        assert engine.name == stacking
        optimizers = engine.optimizers if stacking == "loop" else [engine.optimizer]
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = torch.zeros_like(p)
            optimizer.step()
        engine.to_members()
        for m in stack:
            values = {n: p.unique().tolist() for n, p in m.model.named_parameters()}
            decayed = {n for n, v in values.items() if v == [pytest.approx(0.95)]}
            assert decayed | {n for n, v in values.items() if v == [1.0]} == set(values)
            assert decayed == (set(values) if decay_norm_and_bias else decayed_always)


def test_runs_whose_loss_shapes_the_head_differently_go_to_different_stacks():
    """The affinity head's centres per class (m) and sigma live in the model: m=1 and m=5 runs cannot share one
    vmapped model, so the stacked launcher keeps them apart; the margin lambda is each run's own."""
    def job(*overrides):
        return Job(compose_run(*TINY, *overrides)[0], None, {})

    jobs = [job("loss=affinity", "seed=0"), job("loss=affinity", "loss.lam=0.5", "seed=1"),
            job("loss=affinity_m5", "seed=0"), job("loss=affinity", "loss.sigma=5", "seed=0")]
    assert stack_key(jobs[0].cfg) == stack_key(jobs[1].cfg)
    assert [[jobs.index(j) for j in group] for group in stacks(jobs, max_stack=20)] == [[0, 1], [2], [3]]
