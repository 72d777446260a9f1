"""Hydra callbacks (configured under ``hydra.callbacks`` in ``configs/hydra/default.yaml``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .runfolder import is_done

log = logging.getLogger("imbalance_lab")


def writable_folder(key: str, folder: str) -> None:
    """Stop with one line naming the key when the output folder cannot be created or written."""
    try:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".imbalance_lab_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        print(f"error: {key}={folder} is not allowed: the folder cannot be created or written "
              f"({exc.strerror or exc})", file=sys.stderr)
        raise SystemExit(2) from None


# What this process started (the setting that re-runs into the same folder), for a one-line resume hint when
# an interruption ends it outside a run's own handling (app.cli)
STARTED: dict[str, str] = {}


class SweepSummary(Callback):
    """Checks the output folder before a run or sweep starts, and writes the sweep summary
    (``python -m imbalance_lab.report``) when a multirun ends.

    A failure of the summary is logged and never hides the runs' results, which are already on disk (the
    report can be made again on demand). The sweep's exit code is 1 when any of its runs did not finish
    ``done`` (failed, unfinished or corrupt), 0 otherwise.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        writable_folder("hydra.run.dir", str(config.hydra.run.dir))
        STARTED["resume"] = f"hydra.run.dir={config.hydra.run.dir}"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The sweep folder exists before the sweeper starts: the Optuna sweeper opens its SQLite study there
        # before the launcher has made the folder.
        writable_folder("hydra.sweep.dir", str(config.hydra.sweep.dir))
        STARTED["resume"] = f"hydra.sweep.dir={config.hydra.sweep.dir}"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if self.enabled:
            try:
                from .report import summary_text, write_report  # pandas/matplotlib load only here

                result = write_report(sweep_dir)
                log.info("sweep summary:\n%s", summary_text(result))
            except Exception as exc:  # noqa: BLE001 — the summary must not fail a sweep whose runs are saved
                log.error("sweep summary failed (%s: %s); run `python -m imbalance_lab.report %s`",
                          type(exc).__name__, exc, sweep_dir)
        from .report import find_run_dirs

        not_done = [d for d in find_run_dirs(sweep_dir) if not is_done(d)]
        if not_done:
            log.error("%d run(s) of the sweep did not finish done (see summary.md); re-run the command with "
                      "hydra.sweep.dir=%s to redo only those", len(not_done), sweep_dir)
            raise SystemExit(1)


def continued_tpe_sampler(seed: int | None = None, storage: str | None = None, study_name: str | None = None,
                          **tpe_kwargs: Any):
    """Optuna's TPE sampler for a search that may be continued (``hydra/sweeper/sampler=continued_tpe``).

    Its seed is ``seed`` plus the number of trials already stored in the study: a fresh search is
    reproducible, and a continued one (same sweep folder, same SQLite study) does not replay the random
    start-up proposals it made before the interruption.
    """
    import optuna

    offset = 0
    if seed is not None and storage and study_name:
        try:
            offset = len(optuna.load_study(study_name=study_name, storage=storage).trials)
        except KeyError:  # no such study yet: a fresh search
            offset = 0
    if offset:
        log.info("continuing study %r with %d trials; sampler seed %d", study_name, offset, int(seed) + offset)
    return optuna.samplers.TPESampler(seed=None if seed is None else int(seed) + offset, **tpe_kwargs)
