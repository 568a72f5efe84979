"""The pipeline table: every step, what it needs, what it reads, what it must write.

The table is in dependency order and is the only place that knows the pipeline's shape, and
the only module that imports the steps: they are leaves, and what several of them share lives
in library modules (file names in worldmodel/layout.py). `worldmodel.runner` executes the
table and `worldmodel.store` keeps its results. A step's key
hashes its name, version, the config keys in `reads` and its inputs' keys (see runner.py).
"""

from worldmodel import layout
from worldmodel.runner import Step
from worldmodel.steps import collect, controller, encode, evaluate, figures, mdrnn, vae

V, M, C, E = layout.VAE, layout.MDRNN, layout.CONTROLLER, layout.EVALUATE

STEPS: tuple[Step, ...] = (
    Step(
        "collect", collect.run,
        reads=("seed", "env", "collect"), config=collect.CollectConfig,
        writes=(f"{layout.COLLECT.EPISODES}/ep_*.npz", layout.COLLECT.DATASET),
        not_in_identity=("env.renderer",),  # both renderers draw identical frames
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
    ),
    Step(
        "controller", controller.run, inputs=("vae", "encode", "mdrnn"),  # encode: dream starts
        reads=("seed", "env", "controller"), config=controller.ControllerStepConfig,
        writes=(C.MODEL, C.MEAN_MODEL, C.SUMMARY, layout.METRICS, C.FIGURE, C.STATE,
                C.STATE_INFO),
        not_in_identity=("env.renderer",),
    ),
    Step(
        "evaluate", evaluate.run, inputs=("vae", "mdrnn", "controller"),
        reads=("seed", "env", "evaluate"), config=evaluate.EvaluateConfig,
        writes=(E.RESULTS, E.HISTOGRAM, *(f"{name}.*" for name in E.VIDEOS)),
        not_in_identity=("env.renderer",),
    ),
    Step(
        "figures", figures.run, inputs=figures.INPUTS,
        reads=("figures",), config=figures.FiguresStepConfig,
        writes=(layout.FIGURES.REPORT, layout.FIGURES.INDEX),
    ),
)
