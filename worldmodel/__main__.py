"""`python -m worldmodel` is the `worldmodel` command."""

from worldmodel.cli import main

main()
