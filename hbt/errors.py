"""Errors a user can fix: the CLI prints them as one line and exits 2."""


class HbtError(Exception):
    """A usage or data error; its message is the one line the user sees."""


class ConfigError(HbtError):
    """A config key, type or value is wrong."""


class DataError(HbtError):
    """An input file is missing, malformed, or inconsistent."""
