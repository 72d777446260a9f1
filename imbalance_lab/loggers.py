"""Live views of a run: TensorBoard, a per-epoch CSV, MLflow, Weights & Biases (``logger=<name>``, or several:
``logger=[tensorboard,csv]``; settings in ``schema.LoggerConfig``). The run folder's files stay the source of
truth; a logger only mirrors them while the run trains.

Each logger gets, per epoch, what the run's ``history`` records (loss, lr, images/s, the evaluated metrics,
FixMatch's pseudo-label counts and q̂ — lists as ``name/<i>``), at the end the run's headline test metrics
(``final/<metric>``) and status, and at the start the resolved config (flattened, as hyperparameters) and the
run's tags. Runs of one sweep are grouped: TensorBoard, a sub-folder per run under the sweep's folder; MLflow,
one experiment per sweep; W&B, ``group`` = the sweep. Each run of a stack logs as its own run.

A logger that fails (cannot open its folder, a server that is down, a missing package) is switched off for that
run with one warning; the run goes on. A resumed run continues the same MLflow / W&B run (their ids are kept
in ``loggers.json`` in the run folder).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import secrets
from pathlib import Path

from .atomic import atomic_write
from .runfolder import describe_error
from .schema import LoggerConfig

log = logging.getLogger(__name__)

IDS_FILE = "loggers.json"


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) record as flat ``name`` / ``name/<i>`` keys; text and None are left out."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, int | float):
            if math.isfinite(value):
                out[name] = float(value)
        elif isinstance(value, dict):
            out |= scalars(value, f"{name}/")
        elif isinstance(value, list | tuple):
            out |= scalars({str(i): v for i, v in enumerate(value)}, f"{name}/")
    return out


def flat_config(config: dict, prefix: str = "") -> dict[str, str]:
    """The resolved config as ``dotted.key: text`` (hyperparameters)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat_config(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out


class RunInfo:
    """What a logger needs to know about its run: folder, name (its folder relative to the sweep), the sweep
    folder (None for a single run), the resolved config and the tags."""

    def __init__(self, out_dir: Path, sweep_dir: Path | None, config: dict, tags: list[str], method: str):
        self.out_dir, self.sweep_dir, self.config, self.tags = Path(out_dir), sweep_dir, config, list(tags)
        self.method = method
        inside = sweep_dir is not None and Path(out_dir).resolve().is_relative_to(Path(sweep_dir).resolve())
        self.name = (Path(out_dir).resolve().relative_to(Path(sweep_dir).resolve()).as_posix() if inside
                     else Path(out_dir).name)
        self.group = Path(sweep_dir).name if sweep_dir is not None else None
        self.home = Path(sweep_dir) if sweep_dir is not None else Path(out_dir)  # where shared stores go

    def ids(self) -> dict:
        try:
            return json.loads((self.out_dir / IDS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def keep_id(self, logger: str, value: str) -> None:
        ids = self.ids() | {logger: value}
        atomic_write(self.out_dir / IDS_FILE, lambda f: f.write(json.dumps(ids, indent=1).encode()))


class TensorBoardLogger:
    def __init__(self, cfg, run: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        folder = (Path(cfg.save_dir) / (run.group or "runs") / run.name if cfg.save_dir
                  else run.out_dir / "tensorboard")
        self.writer = SummaryWriter(log_dir=str(folder))
        self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=1) + "\n```", 0)
        if run.tags:
            self.writer.add_text("tags", ", ".join(run.tags), 0)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def finish(self, epoch: int, final: dict[str, float], status: str) -> None:
        for key, value in final.items():
            self.writer.add_scalar(f"final/{key}", value, epoch)
        self.writer.add_text("status", status, epoch)
        self.writer.close()


class CSVLogger:
    """``epochs.csv``: one row per epoch, the columns every key seen so far (an evaluated epoch adds the test
    metrics), rewritten atomically after each epoch so a reader never sees half a row."""

    def __init__(self, cfg, run: RunInfo):
        self.path = run.out_dir / cfg.filename
        self.rows: list[dict] = []

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.rows.append({"epoch": epoch} | values)
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, lambda f: f.write(text.getvalue().encode()))

    def finish(self, epoch: int, final: dict[str, float], status: str) -> None:
        pass  # metrics.json holds the final numbers


class MLflowLogger:
    def __init__(self, cfg, run: RunInfo):
        from mlflow.tracking import MlflowClient

        uri = cfg.tracking_uri or (run.home / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps its local file store only on request (its database store needs SQLAlchemy 2, which
            # the Optuna sweeper's pins rule out); the file store is the no-server mode we offer
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = cfg.experiment_name or run.group or "imbalance_lab"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(name)
            except Exception:  # noqa: BLE001 - another run of the sweep created it first
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        run_id = run.ids().get("mlflow")
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {"imbalance_lab.run_folder": str(run.out_dir), "imbalance_lab.method": run.method}
            tags |= {f"tag.{t}": "true" for t in run.tags}
            if run.tags:
                tags["tags"] = ", ".join(run.tags)
            run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
            run.keep_id("mlflow", run_id)
            from mlflow.entities import Param

            params = [Param(k[:250], v[:6000]) for k, v in flat_config(run.config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
                self.client.log_batch(run_id, params=params[i:i + 100])
        self.run_id = run_id

    def _metrics(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "."), v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self._metrics(values, epoch)

    def finish(self, epoch: int, final: dict[str, float], status: str) -> None:
        self._metrics({f"final/{k}": v for k, v in final.items()}, epoch)
        self.client.set_terminated(self.run_id, status="FINISHED" if status == "done" else "FAILED")


class WandbLogger:
    def __init__(self, cfg, run: RunInfo):
        import wandb

        run_id = run.ids().get("wandb") or secrets.token_hex(4)
        run.keep_id("wandb", run_id)
        folder = Path(cfg.save_dir) if cfg.save_dir else run.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(folder),
                              group=cfg.group or run.group, name=run.name, id=run_id, resume="allow",
                              config=run.config, tags=run.tags or None, reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log(values | {"epoch": epoch}, step=epoch)

    def finish(self, epoch: int, final: dict[str, float], status: str) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in final.items()} | {"status": status})
        self.run.finish(exit_code=0 if status == "done" else 1)


# One name in one place: the schema's LoggerConfig has one field per entry, configs/logger/ one file each.
LOGGERS = {"tensorboard": TensorBoardLogger, "csv": CSVLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}


class RunLoggers:
    """The loggers of one run, each guarded: its first failure is logged once (a warning naming the logger and
    the cause) and switches it off; the run never fails because of a logger."""

    def __init__(self, cfg: LoggerConfig, run: RunInfo):
        self.run = run
        self.active: dict[str, object] = {}
        self.logged_epochs = 0
        for name, cls in LOGGERS.items():
            settings = getattr(cfg, name)
            if settings is not None:
                self._guard(name, "opening", lambda name=name, cls=cls, settings=settings: self.active.__setitem__(
                    name, cls(settings, run)))

    def _guard(self, name: str, what: str, call) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a logger never fails the run
            log.warning("logger %s failed (%s) and is off for this run: %s", name, what, describe_error(exc))
            self.active.pop(name, None)

    def epoch(self, record: dict) -> None:
        """One epoch's history record (called by the training loop after each epoch)."""
        epoch = int(record.get("epoch", self.logged_epochs + 1))
        values = scalars({k: v for k, v in record.items() if k != "epoch"})
        for name, logger in list(self.active.items()):
            self._guard(name, f"epoch {epoch}", lambda logger=logger: logger.epoch(epoch, values))
        self.logged_epochs = max(self.logged_epochs, epoch)

    def finish(self, metrics: dict) -> None:
        """The run's end: the epochs not logged live (a method that trains outside the loop), the headline
        test metrics and the status."""
        for record in metrics.get("history") or []:
            if isinstance(record, dict) and int(record.get("epoch", 0)) > self.logged_epochs:
                self.epoch(record)
        test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
        final = {k: float(v) for k, v in test.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        status = str(metrics.get("status"))
        for name, logger in list(self.active.items()):
            self._guard(name, "finishing", lambda logger=logger: logger.finish(self.logged_epochs, final, status))
        self.active.clear()
