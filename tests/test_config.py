"""Every config group option and every experiment/sweep file composes; typos fail clearly."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_config, run_cli

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override", [f"{g}={o}" for g in GROUPS for o in options(g) if g not in ("sweep",)]
)
def test_every_group_option_composes(override):
    cfg = compose_config([override])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.seed == 0


@pytest.mark.parametrize("name", options("sweep"))
def test_every_sweep_file_composes_with_sweeper_params(name):
    cfg = compose_config([f"sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params, f"sweep/{name}.yaml sets no hydra.sweeper.params"


@pytest.mark.parametrize("group", ["experiment", "sweep"])
def test_recipe_files_start_with_package_then_command(group):
    for path in (CONF / group).glob("*.yaml"):
        first, second = path.read_text().splitlines()[:2]
        assert first == "# @package _global_", path
        assert second.startswith("# worldmodel "), f"{path}: line 2 should be its command"


def test_hardware_options_inherit_every_key_from_auto():
    auto = compose_config(["hardware=auto"]).hardware
    for name in options("hardware"):
        hw = compose_config([f"hardware={name}"]).hardware
        assert set(hw) == set(auto)
        assert hw.device == name


def test_dream_inherits_real_and_sets_temperature():
    real = compose_config(["controller=real"]).controller
    dream = compose_config(["controller=dream"]).controller
    assert set(real) == set(dream)  # real holds the dream keys too, for dream pre-training
    assert dream.mode == "dream" and real.mode == "real"
    assert real.temperature is None and dream.temperature == 1.15


def test_data_presets_set_effort_knobs():
    tiny = compose_config(["data=tiny"])
    paper = compose_config(["data=paper"])
    assert tiny.collect.episodes < paper.collect.episodes == 10000
    assert (paper.controller.population, paper.controller.rollouts) == (64, 16)
    assert compose_config([]).collect.episodes == compose_config(["data=small"]).collect.episodes


def test_command_line_overrides_beat_presets():
    cfg = compose_config(["data=tiny", "collect.episodes=7"])
    assert cfg.collect.episodes == 7


def test_misspelled_key_is_rejected():
    with pytest.raises(ConfigCompositionException, match="epoch"):
        compose_config(["vae.epoch=3"])


def test_unknown_group_option_is_rejected():
    with pytest.raises(ConfigCompositionException, match="huge"):
        compose_config(["data=huge"])


def test_cli_prints_the_composed_config():
    out = run_cli("--cfg", "job", "hardware=cpu", "data=tiny", "controller=dream")
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.controller.mode == "dream" and cfg.hardware.device == "cpu"
    assert cfg.collect.episodes == compose_config(["data=tiny"]).collect.episodes


def test_cli_typo_gives_hydra_message_not_a_traceback():
    out = run_cli("--cfg", "job", "vae.epoch=3")
    assert out.returncode != 0
    assert "Key 'epoch' is not in struct" in out.stderr
    assert "Traceback" not in out.stderr
