"""CarRacing-v3 with this project's renderers, in Gymnasium's registry.

After `import worldmodel.envs`:

    env = gymnasium.make("worldmodel/CarRacing-v3")                     # fast: Gymnasium's
    env = gymnasium.make("worldmodel/CarRacing-v3", renderer="lowres")  # 64x64 model frames

"worldmodel/CarRacing-v3" is CarRacing-v3 (continuous actions, 1000-step limit, the same
physics, rewards and termination) drawn by `renderer`: "fast" (the default; frames identical
to Gymnasium's, over 2x the steps/s), "stock" (Gymnasium's own class) or "lowres" (draws only
the dashboard-free view at `frame_size`, default 64; not Gymnasium's frames, for training).
Every other keyword is CarRacing's (render_mode, domain_randomize, lap_complete_percent, ...).
Measured speeds: docs/benchmarks.md.

Registering is the one thing importing `worldmodel.envs` does: Gymnasium finds environments
only through its registry, which packages fill when imported, as Gymnasium does for its own
(Gymnasium 1.x has no plugin entry points). It adds one entry and builds nothing; the entry
point is a string, resolved at `make`.
"""

from __future__ import annotations

import gymnasium

ENV_ID = "worldmodel/CarRacing-v3"


def register_envs() -> None:
    """Add ENV_ID to Gymnasium's registry (once: importing again changes nothing)."""
    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=ENV_ID,
        entry_point="worldmodel.envs.factory:car_racing",
        max_episode_steps=1000,
        reward_threshold=900,
        kwargs={"continuous": True},
    )
