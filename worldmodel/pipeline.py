"""The pipeline table: every step, what it needs, what it reads, what it must write.

The table is in dependency order and is the only place that knows the pipeline's shape;
`worldmodel.runner` executes it and `worldmodel.store` keeps its results. A step's key
hashes its name, version, the config keys in `reads` and its inputs' keys (see runner.py).
"""

from worldmodel.runner import Step
from worldmodel.steps import collect, controller, encode, evaluate, figures, mdrnn, vae

STEPS: tuple[Step, ...] = (
    Step(
        "collect", collect.run,
        reads=("seed", "env", "collect"), config=collect.CollectConfig,
        writes=("episodes/ep_*.npz", "dataset.json"),
        not_in_identity=("env.renderer",),  # both renderers draw identical frames
    ),
    Step(
        "vae", vae.run, inputs=("collect",),
        reads=("seed", "vae"), config=vae.VAEStepConfig,
        writes=("model.pt", "split.json", "metrics.jsonl", "reconstructions.png", "losses.png"),
        not_in_identity=("vae.in_memory_gb",),  # memory or disk: the same batches
    ),
    Step(
        "encode", encode.run, inputs=("collect", "vae"),
        reads=("vae", "encode"), config=encode.EncodeConfig,
        writes=("latents.json", "latents/ep_*.npz"),
        not_in_identity=("vae.in_memory_gb",),
    ),
    Step(
        "mdrnn", mdrnn.run, inputs=("encode", "vae"),
        reads=("seed", "mdrnn"), config=mdrnn.MDRNNStepConfig,
        writes=("model.pt", "split.json", "metrics.jsonl", "evaluation.json", "losses.png",
                "dream.png", "dream.gif", "dream_error.png", "calibration.png"),
    ),
    Step(
        "controller", controller.run, inputs=("vae", "encode", "mdrnn"),  # encode: dream starts
        reads=("seed", "env", "controller"), config=controller.ControllerStepConfig,
        writes=("controller.pt", "es_mean.pt", "controller.json", "metrics.jsonl", "cma_es.png"),
        not_in_identity=("env.renderer",),
    ),
    Step(
        "evaluate", evaluate.run, inputs=("vae", "mdrnn", "controller"),
        reads=("seed", "env", "evaluate"), config=evaluate.EvaluateConfig,
        writes=(evaluate.RESULTS, evaluate.HISTOGRAM, *(f"{name}.*" for name in evaluate.VIDEOS)),
        not_in_identity=("env.renderer",),
    ),
    Step(
        "figures", figures.run, inputs=figures.INPUTS,
        reads=("figures",), config=figures.FiguresStepConfig,
        writes=("report.md", "figures.json"),
    ),
)
