"""The pipeline table: every step, what it needs, what it reads, what it must write.

The table is in dependency order and is the only place that knows the pipeline's shape, and
the only module that imports the steps: they are leaves, and what several of them share lives
in library modules (file names in worldmodel/layout.py). `worldmodel.runner` executes the
table and `worldmodel.store` keeps its results. A step's key
hashes its name, version, the config keys in `reads` and its inputs' keys (see runner.py).

Rounds. `table(iterations)` is the iterative procedure of the paper's section 5: round 0 is
the chain below (`STEPS`, the same rows and keys for any `iterations`); each further round k
repeats its collect, vae, encode, mdrnn, controller and evaluate rows as collect_rk, vae_rk,
..., reading the `rounds` config section over each step's own (config_slice's overlay):

    collect_rk     drives round k-1's kept controller (plus random-policy episodes) and
                   numbers its episodes after those of the rounds before it
    vae_rk         trains on every round's episodes so far, starting from vae_r(k-1)
    encode_rk      encodes every round's episodes with vae_rk
    mdrnn_rk       trains on them, starting from mdrnn_r(k-1)
    controller_rk  continues round k-1's CMA-ES (mean, step size, covariance)
    evaluate_rk    scores controller_rk on the evaluation tracks

A round is rows of this table, nothing else: each has its own key, so a rerun reuses every
finished round and a killed one resumes inside the round where it stopped. The figures step
comes last and draws the last round (and every round's score, when there are several).
"""

from dataclasses import replace

from worldmodel import layout
from worldmodel.envs import IDENTICAL
from worldmodel.layout import round_name
from worldmodel.runner import Step
from worldmodel.steps import collect, controller, encode, evaluate, figures, mdrnn, vae

V, M, C, E = layout.VAE, layout.MDRNN, layout.CONTROLLER, layout.EVALUATE

# The renderers that draw Gymnasium's frames stay out of a step's identity: either gives the
# same results. A training renderer (env.renderer=lowres) draws other frames, so it enters
# the keys of the steps that drive with it, collect and the controller's search (which may
# draw its own, controller.renderer).
SAME_FRAMES = tuple(("env.renderer", renderer) for renderer in IDENTICAL)

CHAIN: tuple[Step, ...] = (
    Step(
        "collect", collect.run,
        reads=("seed", "env", "collect"), config=collect.CollectConfig,
        writes=(f"{layout.COLLECT.EPISODES}/ep_*.npz", layout.COLLECT.DATASET),
        added=(*SAME_FRAMES, ("collect.random_share", 1.0), ("collect.controller_noise", 0.0)),
    ),
    Step(
        "vae", vae.run, inputs=("collect",),
        reads=("seed", "vae"), config=vae.VAEStepConfig,
        writes=(V.MODEL, V.SPLIT, layout.METRICS, V.RECONSTRUCTIONS, V.LOSSES),
        not_in_identity=("vae.in_memory_gb",),  # memory or disk: the same batches
    ),
    Step(
        "encode", encode.run, inputs=("collect", "vae"),
        reads=("vae", "encode"), config=encode.EncodeConfig,
        writes=(layout.ENCODE.INDEX, f"{layout.ENCODE.LATENTS}/ep_*.npz"),
        not_in_identity=("vae.in_memory_gb",),
    ),
    Step(
        "mdrnn", mdrnn.run, inputs=("encode", "vae"),
        reads=("seed", "mdrnn"), config=mdrnn.MDRNNStepConfig,
        writes=(M.MODEL, M.SPLIT, layout.METRICS, M.EVALUATION, M.LOSSES, M.DREAM_STRIP,
                M.DREAM_GIF, M.DREAM_ERROR, M.CALIBRATION),
        added=(("mdrnn.rewards", "regress"), ("mdrnn.z", "sample")),
    ),
    Step(
        "controller", controller.run, inputs=("vae", "encode", "mdrnn"),  # encode: dream starts
        reads=("seed", "env", "controller"), config=controller.ControllerStepConfig,
        writes=(C.MODEL, C.MEAN_MODEL, C.SUMMARY, layout.METRICS, C.FIGURE, C.STATE,
                C.STATE_INFO),
        # controller.renderer and the dream's start and end options came later: their
        # defaults keep the keys of before. fast and stock stay in the key: with
        # env.renderer=lowres they search on other frames than null does.
        added=(*SAME_FRAMES, ("controller.renderer", None),
               ("controller.dream_start_last", None), ("controller.dream_ends", True)),
    ),
    Step(
        "evaluate", evaluate.run, inputs=("vae", "mdrnn", "controller"),
        reads=("seed", "env", "evaluate"), config=evaluate.EvaluateConfig,
        writes=(E.RESULTS, E.HISTOGRAM, *(f"{name}.*" for name in E.VIDEOS)),
        not_in_identity=("env.renderer",),  # it always drives identical frames (scoring_env)
        added=(("evaluate.controller", "kept"),),
    ),
)

FIGURES = Step(
    "figures", figures.run, inputs=figures.INPUTS,
    reads=("figures",), config=figures.FiguresStepConfig,
    writes=(layout.FIGURES.REPORT, layout.FIGURES.INDEX),
)

# What a round k >= 1 row reads of round k-1 besides its own round's inputs: the agent that
# collects, or the model or search it starts from.
FROM_PREVIOUS_ROUND = {
    "collect": ("vae", "mdrnn", "controller"),
    "vae": ("vae",),
    "mdrnn": ("mdrnn",),
    "controller": ("controller",),
}
ALL_EPISODES = ("collect", "vae", "encode")  # rows that read every earlier round's episodes


def round_rows(k: int) -> list[Step]:
    """Round k's rows: round 0's, renamed, reading round k's inputs and the `rounds` section.
    A row's collect input becomes every round's collect so far (the earlier ones, for
    collect itself)."""
    rows = []
    for step in CHAIN:
        episodes = ([round_name("collect", j) for j in range(k + (step.kind != "collect"))]
                    if step.kind in ALL_EPISODES else [])
        previous = [round_name(up, k - 1) for up in FROM_PREVIOUS_ROUND.get(step.kind, ())]
        inputs = [round_name(up, k) for up in step.inputs if up != "collect"]
        rows.append(replace(step, name=round_name(step.name, k), round=k, overlay="rounds",
                            inputs=tuple(dict.fromkeys([*episodes, *previous, *inputs]))))
    return rows


def table(iterations: int = 1) -> tuple[Step, ...]:
    """The pipeline of `iterations` rounds: round 0's chain, rounds 1.. and the figures, which
    read the last round's results and every round's of figures.ROUND_INPUTS."""
    if iterations < 1:
        raise ValueError(f"iterations={iterations} must be >= 1")
    rows = list(CHAIN)
    for k in range(1, iterations):
        rows += round_rows(k)
    earlier = [round_name(kind, k) for k in range(iterations - 1)
               for kind in figures.ROUND_INPUTS]
    last = [round_name(kind, iterations - 1) for kind in figures.INPUTS]
    return (*rows, replace(FIGURES, inputs=(*earlier, *last)))


STEPS: tuple[Step, ...] = table(1)
