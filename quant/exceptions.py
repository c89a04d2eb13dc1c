"""The one error type quant/ raises for user mistakes and unusable environments."""


class ModelError(ValueError):
    """A model cannot be found, fetched, provisioned or loaded as asked; the message says what to do."""
