"""The pipeline table: every step, what it reads, what it needs, what it writes."""

from worldmodel.runner import Step

STEPS: tuple[Step, ...] = ()
