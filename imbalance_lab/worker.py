"""A run in a worker process of a parallel launcher (joblib's loky workers: ``hydra/launcher=parallel``, the
stacked launcher's ``n_jobs``) ends when the sweep's main process dies: a killed sweep leaves no workers
computing or idling, holding memory, and a resumed sweep never runs a job twice at once. The run it was
doing is left unfinished (no metrics.json) and continues from its checkpoint when the sweep is resumed."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

POLL_SECONDS = 0.5
_watching = False


def end_with_parent() -> None:
    """In a multiprocessing worker, start (once) a daemon thread that exits the process when its parent is
    gone (the worker is then re-parented). A process started otherwise — a shell's, a SLURM job — is left
    alone: it must outlive whatever started it."""
    global _watching
    if _watching or multiprocessing.parent_process() is None:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
    _watching = True
