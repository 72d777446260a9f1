"""The command line: ``python -m imbalance_lab [overrides]`` (``-m`` for a sweep)."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .checkpoint import drop as drop_checkpoints
from .configstore import register_configs, validate
from .data import DatasetUnavailable
from .preemption import Terminated
from .runfolder import (
    METRICS_FILE,
    describe_error,
    is_done,
    library_versions,
    os_error_behind,
    read_metrics,
    write_json_atomic,
)
from .schema import ConfigError
from .worker import claim_gpu, end_with_parent, in_worker

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
        drop_checkpoints(out_dir)  # left by a kill between its metrics.json and their deletion
        done = read_metrics(out_dir)
        warn_if_other_threads(done, cfg, out_dir)
        return done
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        config = validate(cfg)
    except ConfigError as exc:
        return refuse(out_dir, str(exc), resolved, multirun)
    return Job(config, out_dir, resolved, hydra_cfg.runtime.choices.get("loss"), multirun,
               Path(hydra_cfg.sweep.dir) if multirun else None)


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
        if not in_worker():  # a parallel launcher's worker (Ctrl-C reaches all): the sweep's process says it
            where = (f"hydra.sweep.dir={HydraConfig.get().sweep.dir}" if job.multirun
                     else f"hydra.run.dir={job.out_dir}")
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
            if os_error_behind(exc) is not None:  # e.g. a full disk: its cause, in one line
                reason = describe_error(exc)
                log.error("run failed: %s", reason)
                log.debug("the traceback of that failure", exc_info=exc)
                try:
                    record_failure(job.out_dir, reason, job.resolved_config)
                except OSError:
                    pass
                print(f"error: the run failed: {reason}", file=sys.stderr)
                raise SystemExit(1) from None
            raise
        log.exception("run failed with an unexpected error: %s", job.out_dir)
        return objective(record_failure(job.out_dir, describe_error(exc), job.resolved_config))
    if result["status"] != "done" and not job.multirun:
        sys.exit(1)
    return objective(result)


def refused(exc: BaseException) -> str:
    """One line for a config Hydra could not compose: an option a group does not have, a value of the wrong
    type, an override it cannot parse (``key=value is not allowed: what is``)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, OverrideParseException):
        return (f"the overrides cannot be parsed ({' '.join(str(exc).split())[:160]}); write key=value, "
                "group=option, or key=a,b for a sweep")
    missing = getattr(exc, "missing_cfg_file", None) if isinstance(exc, MissingConfigException) else None
    if missing and "/" in missing:
        group, _, option = missing.rpartition("/")
        options = sorted(exc.options or [])
        return f"{group}={option} is not allowed: " + (f"one of {', '.join(options)}" if options
                                                       else f"the group {group} has no options")
    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if key:
        merged = re.search(rf"override {re.escape(key)}=(.*)$", str(exc).splitlines()[0])
        given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.lstrip("+~").startswith(f"{key}=")]
        value = merged.group(1) if merged else (given[-1] if given else "?")
        return f"{key}={value} is not allowed: {_readable(str(cause).splitlines()[0])}"
    detail = " ".join(str(cause or "").split())
    return " ".join(str(exc).split()) + (f" ({detail})" if detail and detail not in str(exc) else "")


def _readable(omegaconf_message: str) -> str:
    """OmegaConf's type errors as what is allowed."""
    kinds = {"Float": "a number", "Integer": "an integer", "Boolean": "true or false"}
    converted = re.search(r"could not be converted to (\w+)", omegaconf_message)
    if converted:
        return kinds.get(converted.group(1), converted.group(1).lower())
    if "is not a ListConfig, list or tuple" in omegaconf_message:
        return "a list, e.g. [1.0,2.0]"
    unknown = re.match(r"Key '([^']+)' not in '([^']+)'", omegaconf_message)
    if unknown:
        return f"not a setting of {unknown.group(2)}"
    return omegaconf_message


def cli() -> None:
    """``python -m imbalance_lab`` and ``imbalance-lab``: Hydra's app, whose refused configs (an unknown config
    option or experiment, a value of the wrong type, an override it cannot parse, a launcher setting out of
    range) end with one ``error:`` line and exit code 2, and whose interruptions in any launcher with one line
    (130 for Ctrl-C, 128 + n for a signal) — never a traceback."""
    from hydra.errors import HydraException

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises its errors here instead of printing a report
    # After Ctrl-C in a parallel sweep, multiprocessing's resource tracker (a process of its own, started later
    # with this environment) cleans up joblib's interrupted semaphores and would say so in a warning
    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), quiet) if w)
    try:
        main()
    except (HydraException, ConfigError) as exc:
        print(f"error: {refused(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"interrupted; resume with {_resume_hint()} (finished runs are kept)", file=sys.stderr)
        raise SystemExit(130) from None
    except Terminated as exc:
        print(f"stopped by {exc}; re-run with {_resume_hint()} to continue", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None


def _resume_hint() -> str:
    """The setting that re-runs into the same folder, for an interruption outside a run's own handling."""
    from .callbacks import STARTED

    return STARTED.get("resume", "the same command")


def objective(metrics: dict | None) -> float | None:
    """What a sweeper maximises: validation macro F1 (never test); None without a validation split."""
    val = (metrics or {}).get("val")
    return val["macro_f1"] if val else None


if __name__ == "__main__":
    cli()
