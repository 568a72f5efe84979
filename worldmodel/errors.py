"""The errors worldmodel reports to a user as one line: what is wrong and how to fix it.

The command line prints these without a traceback (exit code 2); anything else is a bug
and keeps its traceback.
"""


class WorldModelError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class ConfigError(WorldModelError):
    """The composed configuration cannot be used (unknown step, bad value, ...)."""


class HardwareError(WorldModelError):
    """The requested device or setting is not available on this machine."""


class StoreError(WorldModelError):
    """A stored step result cannot be trusted or written."""
