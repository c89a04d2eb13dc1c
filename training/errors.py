"""The ways a training run ends early, each its own type so that train.py's main maps them to exit codes."""


class ConfigError(ValueError):
    """A config file or override that pricer cannot use (one line: what and how to fix it)."""


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN/inf; the step was not applied."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""
