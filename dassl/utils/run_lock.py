"""One run per output folder.

Two runs writing to one folder mix their files silently (the results.json and config.yaml of one
seed beside the checkpoint of another). A run therefore holds ``<folder>/.lock`` while it works:
an exclusive ``flock`` on the file, which the operating system drops when the process dies, and
in the file who holds it (pid, host, start time, command) for the message a second run gets.
A lock left by a dead process is taken over with a note. On file systems without ``flock`` the
recorded process is checked instead (alive on this host: busy). A process the holder starts to
do the work (the protocol scripts run train.py under their own lock) works under the holder's
lock when it is given the holder's token in its environment (``child_environment``), also
through wrappers such as ``srun`` that stand between the two.
"""
import json
import os
import os.path as osp
import secrets
import socket
import sys
import time
from contextlib import contextmanager

from .errors import UserError
from .run_files import LOCK_FILE
from .tools import mkdir_if_missing, reporting_write_errors

try:
    import fcntl
except ImportError:  # Windows: the recorded process is checked instead
    fcntl = None


class RunFolderBusy(UserError):
    """Another live run holds the output folder."""


# Set in the environment of the processes a lock holder starts to work in its folder.
TOKEN_VARIABLE = "RUN_FOLDER_LOCK_TOKEN"


@contextmanager
def run_folder_lock(folder):
    """Hold ``folder``'s lock for the duration of the ``with`` block (see the module notes).

    Yields the environment variables that let a process started inside the block work under
    this lock (pass them to ``subprocess``)."""
    folder = osp.abspath(folder)
    path = osp.join(folder, LOCK_FILE)
    with reporting_write_errors(folder):
        mkdir_if_missing(folder)
        descriptor, token = _acquire(folder, path)
    try:
        yield {TOKEN_VARIABLE: token}
    finally:
        if descriptor is not None:
            _release(path, descriptor)


def _acquire(folder, path):
    """(the open, locked lock file, its token); the file is None when the process that started
    this one holds the lock for it."""
    while True:
        descriptor = _open_lock_file(path)
        try:
            outcome, token = _lock(folder, path, descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        if outcome == "locked":
            return descriptor, token
        os.close(descriptor)
        if outcome == "held for us":
            return None, token
        # "replaced": the holder removed the file while releasing it; lock the new one.


def _open_lock_file(path):
    """The lock file, opened without following a link: a ``.lock`` that is a symbolic link (to
    someone's file, which writing the owner would truncate) is refused."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        if not osp.islink(path):
            raise
        raise UserError(f'"{path}" is a symbolic link, not a lock file (a lock is never written '
                        "through a link): delete it and run again") from error


def _lock(folder, path, descriptor):
    locked = _try_flock(descriptor)
    owner = _read_owner(descriptor)
    if locked is False or (locked is None and _alive_elsewhere(owner)):
        if owner and owner.get("token") and os.environ.get(TOKEN_VARIABLE) == owner["token"]:
            return "held for us", owner["token"]
        raise RunFolderBusy(_busy_message(folder, owner))
    if not _same_file(descriptor, path):
        return "replaced", None
    if owner and owner.get("pid") != os.getpid():
        print(f'Note: taking over the lock of "{folder}" from process {owner.get("pid")} on '
              f"{owner.get('host')}, which ended without releasing it")
    return "locked", _write_owner(descriptor)


def _try_flock(descriptor):
    """True when locked, False when another process holds the lock, None without flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks (some NFS set-ups)
        return None
    return True


def _alive_elsewhere(owner):
    """Whether the process recorded in a lock file that flock cannot guard is still running."""
    if not owner or owner.get("pid") == os.getpid():
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_owner(descriptor):
    os.lseek(descriptor, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(descriptor, 4096):
        data += chunk
    try:
        owner = json.loads(data.decode())
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _write_owner(descriptor):
    """Record this process as the holder; returns the lock's new token."""
    owner = {
        "token": secrets.token_hex(16),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([osp.basename(sys.executable)] + sys.argv),
    }
    os.ftruncate(descriptor, 0)
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, json.dumps(owner).encode())
    os.fsync(descriptor)
    return owner["token"]


def _same_file(descriptor, path):
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _release(path, descriptor):
    try:
        os.remove(path)  # while still locked, so nobody locks the file being removed
    except FileNotFoundError:
        pass
    os.close(descriptor)


def _busy_message(folder, owner):
    if not owner:
        who = "another run"
    else:
        who = (f"another run (process {owner.get('pid')} on {owner.get('host')}, started "
               f"{owner.get('started')}: {owner.get('command')})")
    return (f'output folder "{folder}" is in use by {who}; wait for it to finish or use another '
            f"--output-dir (if that run is gone, delete {osp.join(folder, LOCK_FILE)})")
