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
from .runfolder import METRICS_FILE, is_done, library_versions, read_metrics, write_json_atomic
from .schema import ConfigError

log = logging.getLogger("imbalance_lab")

# Configs ship beside the package (editable install / source checkout), so any working directory works.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

register_configs()


def fail_before_training(out_dir: Path, reason: str, resolved: dict) -> None:
    write_json_atomic(out_dir / METRICS_FILE, {"status": "failed", "reason": reason, "config": resolved,
                                               "versions": library_versions()})


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun and is_done(out_dir):
        log.info("already done, skipped: %s", out_dir)
        return objective(read_metrics(out_dir))

    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        config = validate(cfg)
        # the data and training stack loads once the config is known to be good
        from .run import run_experiment

        result = run_experiment(config, out_dir, resolved, loss_option=hydra_cfg.runtime.choices.get("loss"))
    except (ConfigError, DatasetUnavailable) as exc:
        fail_before_training(out_dir, str(exc), resolved)
        if multirun:  # one bad combination must not stop the sweep
            log.error("error: %s", exc)
            return None
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if result["status"] != "done" and not multirun:
        sys.exit(1)
    return objective(result)


def objective(metrics: dict | None) -> float | None:
    """What a sweeper maximises: validation macro F1 (never test); None without a validation split."""
    val = (metrics or {}).get("val")
    return val["macro_f1"] if val else None


if __name__ == "__main__":
    main()
