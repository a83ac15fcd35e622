"""vitcore: a benchmark and correctness suite for Colossal-AI Booster plugins on ViT / dog_food."""

__version__ = "0.1.0"


class VitcoreError(Exception):
    """An error caused by user input or the environment; the CLI prints it as one line."""


class ConfigError(VitcoreError, ValueError):
    """A bad configuration value; the message names the value and the valid choices."""


class DataError(VitcoreError):
    """A dataset could not be found, read or validated."""


class Diverged(VitcoreError):
    """Training produced a NaN or inf loss."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"diverged: loss became {loss} at step {step}")
        self.step = step
        self.loss = loss
