"""Nothing silently wrong: config mistakes stop before any work with one line; an unexpected error in one
run of a sweep is recorded and the sweep goes on (its exit code says so); Ctrl-C is one line and exit 130."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI_ENV, REPO, TINY, compose_run, run_in_process

from imbalance_lab import report
from imbalance_lab.callbacks import writable_folder
from imbalance_lab.schema import ConfigError


@pytest.mark.parametrize("overrides, key, allowed", [
    (["loss=focal", "+loss.gama=0.5"], "loss.gama", "not a setting of FocalLossConfig"),  # a typo added with +
    (["+trainer.epoch=3"], "trainer.epoch", "not a setting of TrainerConfig"),
    (["seed=-1"], "seed", "an integer in [0, 2^32)"),
    (["seed=4294967296"], "seed", "an integer in [0, 2^32)"),
    (["data.synthetic.image_size=2"], "data.synthetic.image_size", "an integer >= 4"),
    (["optim.lr=inf"], "optim.lr", "a finite number"),
    (["loss=focal", "loss.gamma=inf"], "loss.gamma", "a finite number"),
    (["loss=focal", "loss.alpha=[1,nan,1]"], "loss.alpha[1]", "a finite number"),
])
def test_config_mistakes_stop_with_one_line_naming_the_key(overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        compose_run(*TINY, *overrides)
    assert err.value.key == key and allowed in err.value.allowed
    assert len(str(err.value).splitlines()) == 1


def test_a_batch_larger_than_the_split_is_refused_not_shrunk(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.batch_size=100000 is not allowed: at most 168, the images "):
        run_in_process(tmp_path, *TINY, "trainer.batch_size=100000")
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "predictions.npz").exists()


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_an_unwritable_output_folder_is_one_line_naming_the_key(key, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where a folder's parent should be
    with pytest.raises(SystemExit) as exit_:
        writable_folder(key, str(blocker / "run"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {key}={blocker / 'run'} is not allowed: ")


def test_an_unexpected_error_in_one_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    """A fault injected into the run of seed 1 (as a bug or CUDA out-of-memory would raise): that run is
    failed with the exception's type and message, the other finishes, the summary is written, exit code 1."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import imbalance_lab.run as run\n"
        "original = run.run_experiment\n"
        "def faulty(cfg, *args, **kwargs):\n"
        "    if cfg.seed == 1:\n"
        "        raise RuntimeError('injected fault')\n"
        "    return original(cfg, *args, **kwargs)\n"
        "run.run_experiment = faulty\n")
    sweep = tmp_path / "sweep"
    env = {**os.environ, **CLI_ENV, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "imbalance_lab", "-m", *TINY, "seed=0,1",
                           f"hydra.sweep.dir={sweep}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    runs = report.collect_runs(sweep).set_index("seed")
    assert runs.loc[0, "status"] == "done"
    assert runs.loc[1, "status"] == "failed" and runs.loc[1, "reason"] == "RuntimeError: injected fault"
    assert "injected fault" in (sweep / report.SUMMARY_MD).read_text()
    log = next(p for p in sweep.glob("*seed=1*/imbalance_lab.log"))
    assert "Traceback" in log.read_text()  # the traceback is kept in the run's log


@pytest.mark.parametrize("launcher", ["single run", "parallel"])
def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, launcher):
    """Ctrl-C as a terminal sends it — SIGINT to the command's whole process group, workers included — during
    training: one line naming the folder to resume into, exit code 130, no traceback, no run looking done."""
    out = tmp_path / "out"
    args = ([*TINY, "trainer.epochs=500", f"hydra.run.dir={out}"] if launcher == "single run" else
            ["-m", "hydra/launcher=parallel", *TINY, "trainer.epochs=500", "seed=0,1", f"hydra.sweep.dir={out}"])
    # A shell starts background jobs (`pytest ... &`, a CI script run that way) with SIGINT ignored, which a child
    # inherits; one with a handler here starts with Ctrl-C's default, as a terminal's foreground command does.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "imbalance_lab", *args], cwd=REPO,
                                env={**os.environ, **CLI_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    training = 1 if launcher == "single run" else 2
    deadline = time.time() + 120
    while len(list(out.glob("**/subset_indices.npz"))) < training and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    where = f"hydra.run.dir={out}" if launcher == "single run" else f"hydra.sweep.dir={out}"
    assert lines == [f"interrupted; resume with {where} (finished runs are kept)"], err
    assert not list(out.glob("**/metrics.json"))  # an interrupted run never looks done


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_of_a_killed_parallel_sweep_end_with_it(tmp_path):
    """kill -9 of a hydra/launcher=parallel sweep's main process: its joblib workers, busy training, end too
    (no worker left computing or holding memory; a resumed sweep cannot run a job twice at once)."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "imbalance_lab", "-m", "hydra/launcher=parallel",
                             "hydra.launcher.n_jobs=2", *TINY, "trainer.epochs=1000", "seed=0,1",
                             f"hydra.sweep.dir={sweep}"], cwd=REPO, env={**os.environ, **CLI_ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(sweep.glob("*/subset_indices.npz"))) < 2 and time.time() < deadline:  # both are training
        time.sleep(0.2)
    workers = children(proc.pid)
    assert workers, "no worker processes found"
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 20
    while any(_state(pid) == "alive" for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _state(pid) == "alive"]
    for pid in left:  # do not leave them training if this test fails
        os.kill(pid, signal.SIGKILL)
    assert not left
    assert not list(sweep.glob("*/metrics.json"))  # the interrupted runs are unfinished, not "done"


def _state(pid: int) -> str:
    try:
        return {"Z": "zombie"}.get(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0], "alive")
    except OSError:
        return "zombie"
