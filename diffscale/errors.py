"""Errors a user can cause. CLIs print their message (one line, no traceback) and exit 2."""


class UserError(Exception):
    """A mistake in input or configuration; the message names the file, field or id."""

    exit_code = 2


class ConfigError(UserError):
    """config.yaml (or a CLI flag standing in for it) is wrong."""


class DataError(UserError):
    """An input file is missing, malformed or not what was expected."""


class ModelSpecError(UserError):
    """A model spec cannot be built or loaded."""


class HardwareError(UserError):
    """The job asked for hardware this machine does not have."""
