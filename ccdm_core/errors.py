"""The engine's one error type: a ValueError whose message names the problem and what is accepted."""


class CCDMError(ValueError):
    """Bad input to the engine: the message names the problem and the accepted values."""
