"""The project's own error for what a user gave: the bottom of the layers, so that every module (models
included) raises it. The command line prints it as one line; anything else keeps its traceback."""


class ConfigError(ValueError):
    """A value, file or command the user gave that is not allowed; the message is one line for the user,
    naming the bad value and what is allowed."""
