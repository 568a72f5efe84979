"""Config plumbing: cutting a step's slice out of the Hydra config and typing it.

Configs are plain YAML data. At a step's boundary its slice becomes a dataclass, so a step
reads `cfg.epochs` (an int, checked) rather than digging in a DictConfig.
"""

from __future__ import annotations

from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from worldmodel.errors import ConfigError

T = TypeVar("T")


def config_slice(cfg: DictConfig, keys: tuple[str, ...], overlay: str | None = None
                 ) -> dict[str, Any]:
    """The resolved values of `keys` (dotted paths into `cfg`) as plain JSON-like data.

    `overlay` names a section of `cfg` whose entries replace those of the same keys: with
    overlay "rounds", key "vae" is cfg.vae with cfg.rounds.vae merged over it (the steps of
    rounds after the first read their config so). Keys the overlay lacks are unchanged.
    """
    part: dict[str, Any] = {}
    for key in keys:
        try:
            node = OmegaConf.select(cfg, key, throw_on_missing=True, default=KeyError)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"config key {key!r} cannot be resolved: {exc}") from exc
        if node is KeyError:
            raise ConfigError(f"config key {key!r} is missing from the composed config")
        if isinstance(node, DictConfig) or OmegaConf.is_list(node):
            node = OmegaConf.to_container(node, resolve=True)
        part[key] = node
    if overlay is not None:
        over = config_slice(cfg, (overlay,))[overlay] or {}
        for key in keys:
            if key in over:
                part[key] = OmegaConf.to_container(OmegaConf.merge(part[key], over[key]))
    return part


def drop_keys(data: dict[str, Any], dotted: tuple[str, ...],
              at_values: tuple[tuple[str, Any], ...] = ()) -> dict[str, Any]:
    """A copy of `data` without the dotted keys, and without each (key, value) of `at_values`
    whose key holds that value (used to keep settings out of an identity)."""
    out = OmegaConf.create(data)
    drops = [(key, None, False) for key in dotted] + [(k, v, True) for k, v in at_values]
    for key, value, only_at in drops:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(out, parent) if parent else out
        if isinstance(node, DictConfig) and leaf in node and (not only_at or node[leaf] == value):
            node.pop(leaf)
    return OmegaConf.to_container(out)


def typed(cls: type[T], data: dict[str, Any], what: str) -> T:
    """Build dataclass `cls` from `data`, failing on unknown, missing or mistyped fields."""
    try:
        schema = OmegaConf.structured(cls)
        merged = OmegaConf.merge(schema, data)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        message = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)
        where = f"{key}: " if key else f"{what}: "
        raise ConfigError(f"{where}{message} (fix {key or 'the value'} on the command line "
                          "or in conf/)") from exc


def at_least(section: str, params: Any, names: tuple[str, ...], minimum: int = 1) -> list[str]:
    """One problem per field of `params` below `minimum`, each naming its key and the fix."""
    return [f"{section}.{name}={getattr(params, name)} must be >= {minimum} (set "
            f"{section}.{name}={minimum} or more)"
            for name in names if getattr(params, name) < minimum]


def one_of(key: str, value: Any, choices: Any) -> list[str]:
    """A problem when `value` is not among `choices`, naming them."""
    if value in choices:
        return []
    return [f"{key}={value!r} is not one of {', '.join(map(str, choices))} (set {key} to one "
            "of them)"]


def require(problems: list[str]) -> None:
    """Raise the problems found in a step's config as one ConfigError line."""
    if problems:
        raise ConfigError("; ".join(problems))
