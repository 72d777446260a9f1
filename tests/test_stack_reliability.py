"""A stack is as safe as a single run: one member's failure (in its step, or writing its results) is that
member's alone; a kill while a stack writes its results loses nothing; a checkpoint survives settings that do
not change the result; Hydra's own config errors are one line. In process, with faults injected."""

import errno
import io
import sys
from contextlib import redirect_stderr

import pytest
import torch
from conftest import TINY, compose_run, read_json, run_in_process
from omegaconf import OmegaConf
from test_gpu_path import stopped_after_first_checkpoint

from imbalance_lab import app, checkpoint, report, run
from imbalance_lab.callbacks import SweepSummary
from imbalance_lab.run import Job, run_stack
from imbalance_lab.runfolder import is_done, read_metrics

TIMES = {"wall_seconds", "train_seconds", "train_images_per_s", "resumed_from_epoch", "resumed_from_step", "stack"}
STACK = [*TINY, "trainer.epochs=2", "trainer.checkpoint_every=1"]


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMES} | {
        "history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in metrics["history"]]}


def jobs_in(sweep, *overrides, seeds=(0, 1, 2)) -> list[Job]:
    """The runs of a small sweep, each with the ``.hydra/`` record Hydra writes (for the summary)."""
    out = []
    for seed in seeds:
        cfg, resolved, option = compose_run(*STACK, *overrides, f"seed={seed}")
        folder = sweep / f"seed={seed}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
        out.append(Job(cfg, folder, resolved, option, multirun=True))
    return out


def fault_in_seed(monkeypatch, seed: int, at_call: int) -> None:
    """The loss of the run with ``seed`` raises on its ``at_call``-th training call (as a bug would)."""
    make = run.stack_member

    def member(cfg, *args, **kwargs):
        m = make(cfg, *args, **kwargs)
        if cfg.seed == seed:
            forward, calls = m.loss_fn.forward, []

            def faulty(*a, **k):
                calls.append(1)
                if len(calls) == at_call:
                    raise RuntimeError("injected fault")
                return forward(*a, **k)

            m.loss_fn.forward = faulty
        return m

    monkeypatch.setattr(run, "stack_member", member)


@pytest.mark.parametrize("stacking", ["loop", "vmap"])
def test_one_members_error_fails_that_member_alone(tmp_path, monkeypatch, stacking):
    """Seed 1's loss raises in its 4th step: it is failed with the reason and where; the other two train to
    the end (loop: each equal to its run alone; vmap: the failed member is left out of the stacked step) and the
    sweep's summary lists the failure and ends with exit code 1."""
    sweep = tmp_path / "sweep"
    jobs = jobs_in(sweep, f"trainer.stacking={stacking}")
    with monkeypatch.context() as patch:
        fault_in_seed(patch, seed=1, at_call=4)
        results = run_stack(jobs)
    assert [r["status"] for r in results] == ["done", "failed", "done"]
    assert results[1]["reason"] == "RuntimeError: injected fault (epoch 1, step 4)"
    assert all(r["stack"]["engine"] == stacking for r in results)
    if stacking == "loop":
        for job, stacked in zip(jobs[::2], results[::2]):
            alone = run_in_process(tmp_path / f"alone{job.cfg.seed}", *STACK, f"seed={job.cfg.seed}")
            assert comparable(stacked) | {"config": None} == comparable(alone) | {"config": None}  # (stacking)
    assert report.write_report(sweep)["counts"] == {"done": 2, "failed": 1, "unfinished": 0, "corrupt": 0}
    assert "injected fault" in (sweep / report.SUMMARY_MD).read_text()
    with pytest.raises(SystemExit) as exit_:
        SweepSummary(enabled=False).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert exit_.value.code == 1


def test_one_members_failed_write_never_changes_anothers_status(tmp_path, monkeypatch):
    """The disk fills while the second of three writes its weights (torch reports its own error, the full
    disk is the OSError under it): that run is failed with the root cause, the others are done."""
    save = checkpoint.save_final

    def full_disk_for_seed_1(out_dir, model):
        if "seed=1" in str(out_dir):
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as cause:
                raise RuntimeError("[enforce fail at inline_container.cc:626] unexpected pos 64") from cause
        return save(out_dir, model)

    monkeypatch.setattr(checkpoint, "save_final", full_disk_for_seed_1)
    results = run_stack(jobs_in(tmp_path))
    assert [r["status"] for r in results] == ["done", "failed", "done"]
    assert results[1]["reason"] == "writing its results: OSError: [Errno 28] No space left on device"
    assert read_json(tmp_path / "seed=1" / "metrics.json")["status"] == "failed"
    assert list((tmp_path / "seed=1").glob("checkpoint*.pt"))  # kept: a re-run continues from them


@pytest.mark.parametrize("kill_after", [("model", 0), ("metrics", 0), ("metrics", 1)],
                         ids=["first model.pt", "first metrics.json", "midway"])
def test_a_kill_while_a_stack_writes_its_results_loses_nothing(tmp_path, monkeypatch, kill_after):
    """The stack is killed (here: KeyboardInterrupt, leaving the files as a kill does) just after one of its
    final writes; re-running the runs not done (as the launchers do) finishes every run, each equal to an
    uninterrupted stack's, continuing from its checkpoint rather than from scratch."""
    jobs = jobs_in(tmp_path / "killed")
    written = []
    save, finish = checkpoint.save_final, run.RunRecord.finish

    def then_maybe_kill(kind, index):
        written.append((kind, index))
        if written[-1] == kill_after:
            raise KeyboardInterrupt

    def save_final(out_dir, model):
        save(out_dir, model)
        then_maybe_kill("model", [j.out_dir for j in jobs].index(out_dir))

    def record_finish(record, *args, **kwargs):
        metrics = finish(record, *args, **kwargs)
        then_maybe_kill("metrics", [j.out_dir for j in jobs].index(record.out_dir))
        return metrics

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_final", save_final)
        patch.setattr(run.RunRecord, "finish", record_finish)
        with pytest.raises(KeyboardInterrupt):
            run_stack(jobs)
    left = [j for j in jobs if not is_done(j.out_dir)]
    assert left and all(list(j.out_dir.glob("checkpoint*.pt")) for j in left)  # resumable, every one
    resumed = run_stack(left)
    assert all(r["resumed_from_epoch"] == 1 for r in resumed)  # from its checkpoint, not from scratch
    uninterrupted = run_stack(jobs_in(tmp_path / "alone"))
    for job, alone in zip(jobs, uninterrupted):
        assert comparable(read_json(job.out_dir / "metrics.json")) == comparable(alone)
    # a run killed after its metrics.json, before it dropped its checkpoints, is done (a re-run skips it and
    # drops them: app.prepare); every other run finished and dropped its own
    assert all(not list(j.out_dir.glob("checkpoint*.pt")) for j in left)


def test_a_checkpoint_survives_settings_that_do_not_change_the_result(tmp_path, monkeypatch):
    """Stopped after its first checkpoint with one progress bar, data path, checkpoint interval, sync check and
    thread count, the run continues with others (checkpoint.NOT_IDENTITY) and ends as the uninterrupted run; a
    setting that changes the result (the learning rate) starts it again."""
    first = [*TINY, "trainer.epochs=3", "trainer.checkpoint_every=1", "trainer.progress=false",
             "trainer.threads=1", f"data.root={tmp_path / 'nowhere'}"]
    stopped_after_first_checkpoint(tmp_path / "run", monkeypatch, *first)
    cosmetic = ["trainer.progress=true", "trainer.checkpoint_every=2", "data.root=null", "trainer.sync_check=true",
                "trainer.threads=1"]
    resumed = run_in_process(tmp_path / "run", *first, *cosmetic)
    assert resumed["resumed_from_epoch"] == 1
    alone = run_in_process(tmp_path / "alone", *first)
    assert comparable(resumed) | {"config": None} == comparable(alone) | {"config": None}  # configs: as given
    assert set(checkpoint.NOT_IDENTITY) == {"data.root", "data.download_dir", "trainer.progress",
                                            "trainer.checkpoint_every", "trainer.sync_check", "trainer.threads"}
    stopped_after_first_checkpoint(tmp_path / "other", monkeypatch, *first)
    assert run_in_process(tmp_path / "other", *first, "optim.lr=0.01")["resumed_from_epoch"] is None


def test_a_metrics_file_that_is_json_but_not_an_object_is_an_unfinished_run(tmp_path):
    (tmp_path / "metrics.json").write_text('["done"]')
    assert read_metrics(tmp_path) is None and not is_done(tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["model=nonexistent"], ("model=nonexistent is not allowed: one of cnn_cifar, cnn_mnist, cnn_small, resnet18, "
                            "resnet32, wrn28_2")),
    (["loss=nonexistent"], "loss=nonexistent is not allowed: one of affinity, affinity_cifar, "),
    (["experiment=nonexistent"], "experiment=nonexistent is not allowed: one of affinity_cifar10, affinity_mnist, "),
    (["data.imbalance=abc"], "data.imbalance=abc is not allowed: a number"),
    (["seed=1.5"], "seed=1.5 is not allowed: an integer"),
    (["loss.alpha=2"], "loss.alpha=2 is not allowed: not a setting of CELossConfig"),
    (["loss=focal", "loss.alpha=2"], "loss.alpha=2 is not allowed: a list, e.g. [1.0,2.0]"),
    (["-m", "data.imbalance=4,abc"], "data.imbalance=abc is not allowed: a number"),
    (["-m", "hydra/launcher=stacked", "hydra.launcher.max_stack=0"],
     "hydra.launcher.max_stack=0 is not allowed: an integer >= 1"),
    (["-m", "hydra/launcher=stacked", "hydra.launcher.n_jobs=0"],
     "hydra.launcher.n_jobs=0 is not allowed: an integer >= 1"),
    (["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0"],
     "hydra.launcher.n_jobs=0 is not allowed: an integer >= 1 (runs at once)"),
    (["loss=ce,"], "the overrides cannot be parsed ("),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_hydras_own_config_errors_are_one_line_and_exit_code_2(tmp_path, monkeypatch, argv, message):
    flags = [a for a in argv if a.startswith("-")]  # before the overrides, as Hydra's command line wants them
    monkeypatch.setattr(sys, "argv", ["imbalance_lab", *flags, *TINY, *[a for a in argv if a not in flags],
                                      f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        app.cli()
    assert exit_.value.code == 2
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith(f"error: {message}"), err.getvalue()
    assert not list(tmp_path.glob("*/**/metrics.json"))  # refused before any work


def test_a_shared_step_error_is_no_members_fault(monkeypatch):
    """An error in what all members of a vmapped stack share (its forward) is raised, not pinned on one."""
    from test_stack import members as stack_members

    from imbalance_lab.losses.focal import FocalLossConfig
    from imbalance_lab.schema import OptimConfig, TrainerConfig
    from imbalance_lab.train import Precision
    from imbalance_lab.train.stack import VmapEngine

    engine = VmapEngine(stack_members([FocalLossConfig()] * 2, [0, 1]), TrainerConfig(device="cpu"),
                        OptimConfig(name="adam"), 10, 1, Precision())
    monkeypatch.setattr(engine, "forward", lambda *a: (_ for _ in ()).throw(RuntimeError("shared")))
    batch = (torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="shared"):  # fit_stack lets it through: the stack fails as a run would
        engine.step([batch, batch], [True, True])
