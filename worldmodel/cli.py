"""The `worldmodel` command: a Hydra app that runs the pipeline.

    worldmodel                                   # the whole chain, data=small, hardware=auto
    worldmodel data=tiny hardware=cpu steps=[collect]
    worldmodel -m seed=0,1,2                     # a sweep (Hydra multirun)
    worldmodel --cfg job                         # print the composed config and stop

Configs live in the repository's conf/ (see README.md for the groups).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from worldmodel import hardware, report, tracking
from worldmodel.config import typed
from worldmodel.errors import ConfigError, WorldModelError
from worldmodel.pipeline import table
from worldmodel.runner import Runner, mark_killed_runs
from worldmodel.store import Store

log = logging.getLogger("worldmodel")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def iterations(cfg: DictConfig) -> int:
    value = cfg.get("iterations", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"iterations={value!r} must be a whole number >= 1 (the rounds of "
                          "the chain; 1 runs it once)")
    return value


def run(cfg: DictConfig) -> dict:
    """Run the steps `cfg` asks for; returns the run's summary."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    hw = hardware.setup(typed(hardware.HardwareConfig, cfg.hardware, "hardware"))
    log.info("hardware: %s; run directory: %s", hw.describe()["device"], run_dir)
    store = Store(cfg.paths.store, verify=cfg.verify)
    mark_killed_runs(Path(cfg.paths.outputs), run_dir)
    tracker = tracking.make_tracker(
        cfg.get("logger"), run_dir, OmegaConf.to_container(cfg, resolve=True)
    )
    try:
        steps = table(iterations(cfg))
        summary = Runner(steps, cfg, hw, store, run_dir, tracker=tracker).run(cfg.steps, cfg.force)
    finally:
        tracker.close()
    log.info("summary: %s", run_dir / "summary.json")
    log.info("report: %s", report.write_run_report(run_dir, summary))
    return summary


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except WorldModelError as exc:
        log.error("error: %s", exc)
        # SystemExit passes through Hydra's error handler, so the user sees one line.
        sys.exit(2)


def stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (`kill`, a cluster's time limit or preemption) stops the run as Ctrl-C does:
    the summary says "interrupted", partial work is kept, and the same command resumes."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main() -> None:
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    if not (CONF_DIR / "config.yaml").is_file():
        sys.exit(
            f"error: worldmodel's configs are not at {CONF_DIR}; install the package from its "
            "repository with `pip install -e .` (scripts/run.sh does this)"
        )
    app()
