"""worldmodel: World Models (Ha & Schmidhuber, 2018) on Gymnasium's CarRacing-v3.

The pipeline collect -> vae -> encode -> mdrnn -> controller -> evaluate is declared in
`worldmodel.pipeline` and run by the `worldmodel` command (`worldmodel.cli`).
"""

__version__ = "0.1.0"
