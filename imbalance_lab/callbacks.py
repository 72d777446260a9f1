"""Hydra callbacks (configured under ``hydra.callbacks`` in ``configs/hydra/default.yaml``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("imbalance_lab")


class SweepSummary(Callback):
    """Writes the sweep summary (``python -m imbalance_lab.report``) when a multirun ends.

    A failure here is logged and never turns a finished sweep into an error: the runs' results are already
    on disk, and the report can be made again on demand.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The sweep folder exists before the sweeper starts: the Optuna sweeper opens its SQLite study there
        # before the launcher has made the folder.
        try:
            Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not create the sweep folder: %s", exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            if not sweep_dir.is_dir():
                log.warning("sweep summary: no sweep folder %s", sweep_dir)
                return
            from .report import summary_text, write_report  # pandas/matplotlib load only here

            result = write_report(sweep_dir)
            log.info("sweep summary:\n%s", summary_text(result))
        except Exception as exc:  # noqa: BLE001 — the summary must not fail a sweep whose runs are saved
            log.error("sweep summary failed (%s: %s); run `python -m imbalance_lab.report %s`",
                      type(exc).__name__, exc, config.hydra.sweep.dir)


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
