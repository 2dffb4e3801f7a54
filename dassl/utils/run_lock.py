"""One run per output folder.

Two runs writing to one folder mix their files silently (the results.json and config.yaml of one
seed beside the checkpoint of another). A run therefore holds ``<folder>/.lock`` while it works:
an exclusive ``flock`` on the file, which the operating system drops when the process dies, and
in the file who holds it (pid, host, start time, command) for the message a second run gets.
A lock left by a dead process is taken over with a note. On file systems without ``flock`` the
recorded process is checked instead (alive on this host: busy). A process started by the
holder (the protocol scripts run train.py under their own lock) works under its parent's lock.
"""
import json
import os
import os.path as osp
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


@contextmanager
def run_folder_lock(folder):
    """Hold ``folder``'s lock for the duration of the ``with`` block (see the module notes)."""
    folder = osp.abspath(folder)
    path = osp.join(folder, LOCK_FILE)
    with reporting_write_errors(folder):
        mkdir_if_missing(folder)
        descriptor = _acquire(folder, path)
    try:
        yield
    finally:
        if descriptor is not None:
            _release(path, descriptor)


def _acquire(folder, path):
    """The open, locked lock file; None when the parent process holds the lock for us."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            outcome = _lock(folder, path, descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        if outcome == "locked":
            return descriptor
        os.close(descriptor)
        if outcome == "held by parent":
            return None
        # "replaced": the holder removed the file while releasing it; lock the new one.


def _lock(folder, path, descriptor):
    locked = _try_flock(descriptor)
    owner = _read_owner(descriptor)
    if locked is False or (locked is None and _alive_elsewhere(owner)):
        if owner and owner.get("pid") == os.getppid() and owner.get("host") == socket.gethostname():
            return "held by parent"
        raise RunFolderBusy(_busy_message(folder, owner))
    if not _same_file(descriptor, path):
        return "replaced"
    if owner and owner.get("pid") != os.getpid():
        print(f'Note: taking over the lock of "{folder}" from process {owner.get("pid")} on '
              f"{owner.get('host')}, which ended without releasing it")
    _write_owner(descriptor)
    return "locked"


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
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([osp.basename(sys.executable)] + sys.argv),
    }
    os.ftruncate(descriptor, 0)
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, json.dumps(owner).encode())
    os.fsync(descriptor)


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
