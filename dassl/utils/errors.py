"""The base class of errors the user can fix (a path, a config value, a file).

Entry points (``train.py``, ``predict.py``, ``python -m datasets.prepare``) print a ``UserError``'s
message alone, without a traceback, so the message must say what is wrong and what to do.
"""
import re

# How torch's DataLoader re-raises an error from a worker process: it builds a new exception of
# the same class whose message is the worker's whole formatted traceback.
_WORKER_TRACEBACK = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class UserError(Exception):
    """An error caused by the user's files, settings or command line; its message says what to do.

    Subclasses may also derive from the built-in class callers expect (FileNotFoundError,
    ValueError, ...), so existing ``except`` clauses keep working.
    """

    def __init__(self, message=""):
        super().__init__(_message_without_worker_traceback(type(self), str(message)))


class ConfigError(UserError, ValueError):
    """A config file, override or value that the config cannot take."""


def _message_without_worker_traceback(error_class, message):
    """The original message of an error re-raised from a DataLoader worker (the text after the
    last "<module>.<Class>: " of the traceback), or ``message`` itself otherwise."""
    if not _WORKER_TRACEBACK.match(message):
        return message
    for name in (f"{error_class.__module__}.{error_class.__qualname__}", error_class.__qualname__):
        head, separator, original = message.rpartition(f"\n{name}: ")
        if separator:
            return original.rstrip("\n")
    return message
