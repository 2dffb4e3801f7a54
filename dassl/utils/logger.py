"""Tee stdout / stderr into ``<output>/log.txt`` (the file users and parsers read)."""
import os
import os.path as osp
import sys
import time

from .run_files import LOG_FILE
from .tools import mkdir_if_missing, open_no_follow, reporting_write_errors

_active_tees = []


class _Tee:
    """A text stream that writes to the original console stream and to a log file."""

    def __init__(self, console, log_file):
        self.console = console
        self.file = log_file

    def write(self, message):
        self.console.write(message)
        if self.file is None:
            return
        try:
            self.file.write(message)
            # Flushed on every write so that a crashed run still leaves its log behind.
            self.file.flush()
        except OSError as error:
            # A full disk must not turn every print into a traceback: the console keeps the
            # messages, and the run stops with a clear error at its next checkpoint or result.
            self.file = None
            self.console.write(f"\nwarning: cannot write the log ({error.strerror or error}); "
                               "printing to the console only\n")

    def flush(self):
        self.console.flush()
        if self.file is not None:
            try:
                self.file.flush()
            except OSError:
                self.file = None

    def isatty(self):
        return False

    def fileno(self):
        return self.console.fileno()

    def __getattr__(self, name):
        return getattr(self.console, name)


def _log_path(output):
    if output.endswith((".txt", ".log")):
        return output
    return osp.join(output, LOG_FILE)


def keep_old_file(fpath):
    """Rename an existing file (a log, a config) to ``<name>-YYYY-MM-DD-HH-MM-SS`` so a new run
    never overwrites it (a symbolic link is renamed itself, never followed)."""
    if not osp.lexists(fpath):
        return
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(os.lstat(fpath).st_mtime))
    target = f"{fpath}-{stamp}"
    suffix = 1
    while osp.exists(target):
        target = f"{fpath}-{stamp}-{suffix}"
        suffix += 1
    os.replace(fpath, target)


def console_stream():
    """The terminal's stderr, bypassing the log file (for progress bars, which would fill the
    log with carriage-return redraws)."""
    for stream_name, tee in _active_tees:
        if stream_name == "stderr":
            return tee.console
    return sys.stderr


def close_logger():
    """Stop teeing: restore the console streams and close the log file."""
    while _active_tees:
        stream_name, tee = _active_tees.pop()
        if getattr(sys, stream_name) is tee:
            setattr(sys, stream_name, tee.console)
        if tee.file is not None and not tee.file.closed:
            try:
                tee.file.close()
            except OSError:
                pass  # the disk filled up: what could be written was, the rest went to the console


def setup_logger(output=None):
    """Send everything printed to stdout and stderr also to ``output/log.txt``.

    ``output`` is a directory (the log is ``log.txt`` inside it) or a path ending in ``.txt`` /
    ``.log``. A log left by an earlier run in the same place is renamed with a timestamp.
    """
    if output is None:
        return
    close_logger()
    fpath = _log_path(output)
    with reporting_write_errors(fpath):
        mkdir_if_missing(osp.dirname(osp.abspath(fpath)))
        keep_old_file(fpath)
        log_file = open_no_follow(fpath, "w")
    for stream_name in ("stdout", "stderr"):
        tee = _Tee(getattr(sys, stream_name), log_file)
        setattr(sys, stream_name, tee)
        _active_tees.append((stream_name, tee))
