"""The command line: ``python -m imbalance_lab [overrides]`` (``-m`` for a sweep)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .configstore import register_configs, validate
from .data import DatasetUnavailable
from .preemption import Terminated
from .runfolder import METRICS_FILE, is_done, library_versions, read_metrics, write_json_atomic
from .schema import ConfigError
from .worker import claim_gpu, end_with_parent

log = logging.getLogger("imbalance_lab")



def config_dir() -> str:
    """The configs: inside the installed package (a wheel carries the checkout's configs/ as
    imbalance_lab/configs), else the checkout's configs/ (an editable install, or the checkout on PYTHONPATH).
    An absolute path, so any working directory works; a user's own folder joins it with ``--config-dir`` or
    ``hydra.searchpath``."""
    package = Path(__file__).resolve().parent
    packaged = package / "configs"
    return str(packaged if packaged.is_dir() else package.parent / "configs")


CONFIG_DIR = config_dir()

register_configs()


def record_failure(out_dir: Path, reason: str, resolved: dict) -> dict:
    metrics = {"status": "failed", "reason": reason, "config": resolved, "versions": library_versions()}
    write_json_atomic(out_dir / METRICS_FILE, metrics)
    return metrics


def refuse(out_dir: Path, reason: str, resolved: dict, multirun: bool) -> dict:
    """A run that cannot start (a bad value, no dataset): recorded as failed with the reason; a single run
    stops with one line and exit code 2, a sweep goes on."""
    metrics = record_failure(out_dir, reason, resolved)
    if not multirun:
        print(f"error: {reason}", file=sys.stderr)
        sys.exit(2)
    log.error("error: %s", reason)
    return metrics


def prepare(cfg: DictConfig):
    """The job Hydra set up, as a ``run.Job`` to train, or — for a sweep's run that is already done, or one
    refused before any work — its metrics."""
    from .run import Job  # the data and training stack loads once the config is known to be good

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun and is_done(out_dir):
        log.info("already done, skipped: %s", out_dir)
        done = read_metrics(out_dir)
        warn_if_other_threads(done, cfg, out_dir)
        return done
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        config = validate(cfg)
    except ConfigError as exc:
        return refuse(out_dir, str(exc), resolved, multirun)
    return Job(config, out_dir, resolved, hydra_cfg.runtime.choices.get("loss"), multirun)


def warn_if_other_threads(done: dict, cfg: DictConfig, out_dir: Path) -> None:
    """A sweep resumed with another CPU thread count mixes numbers that are not comparable: say so."""
    import torch

    device = done.get("device") or {}
    now = cfg.trainer.threads or torch.get_num_threads()
    if device.get("type") == "cpu" and device.get("threads") not in (None, now):
        log.warning("%s was trained with %s CPU threads, this sweep has %s: on CPU the numbers depend on the "
                    "thread count (set trainer.threads=%s to match)", out_dir, device["threads"], now,
                    device["threads"])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    end_with_parent()
    claim_gpu()  # a worker of hydra/launcher=parallel: its GPU, before anything touches CUDA
    job = prepare(cfg)
    if isinstance(job, dict):
        return objective(job)
    from .run import run_experiment

    try:
        result = run_experiment(job.cfg, job.out_dir, job.resolved_config, loss_option=job.loss_option)
    except (ConfigError, DatasetUnavailable) as exc:  # found while reading the data
        return objective(refuse(job.out_dir, str(exc), job.resolved_config, job.multirun))
    except KeyboardInterrupt:
        where = f"hydra.sweep.dir={HydraConfig.get().sweep.dir}" if job.multirun else "the same command"
        print(f"interrupted; resume with {where} (finished runs are kept)", file=sys.stderr)
        raise SystemExit(130) from None
    except Terminated as exc:  # SIGTERM / SIGUSR2: the run wrote a checkpoint of where it stopped
        resume = (f"hydra.sweep.dir={HydraConfig.get().sweep.dir}" if job.multirun
                  else f"hydra.run.dir={job.out_dir}")
        reason = f"stopped by {exc}; re-run with {resume} to continue"
        if job.multirun and not is_done(job.out_dir):
            record_failure(job.out_dir, reason, job.resolved_config)
        print(reason, file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    except Exception as exc:  # a bug or an out-of-memory in one run must not end a sweep
        if not job.multirun:
            raise
        log.exception("run failed with an unexpected error: %s", job.out_dir)
        return objective(record_failure(job.out_dir, f"{type(exc).__name__}: {exc}", job.resolved_config))
    if result["status"] != "done" and not job.multirun:
        sys.exit(1)
    return objective(result)


def objective(metrics: dict | None) -> float | None:
    """What a sweeper maximises: validation macro F1 (never test); None without a validation split."""
    val = (metrics or {}).get("val")
    return val["macro_f1"] if val else None


if __name__ == "__main__":
    main()
