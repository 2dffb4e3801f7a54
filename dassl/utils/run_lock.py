"""One run per output folder.

Two runs writing to one folder mix their files silently (the results.json and config.yaml of one
seed beside the checkpoint of another). A run therefore holds ``<folder>/.lock`` while it works:
an exclusive ``flock`` on the file, which the operating system drops when the process dies, and
in the file who holds it (pid, host, start time, command) for the message a second run gets.
A lock left by a dead process is taken over with a note. On file systems without ``flock`` the
recorded process is checked instead (alive on this host: busy).

A process the holder starts to do the work (the protocol scripts run train.py under their own
lock) works under the holder's lock when it is given the holder's token in its environment
(``handover``), also through wrappers such as ``srun`` that stand between the two. A direct
child is also given the locked file itself, and holds the lock too: killing the holder alone
leaves the folder locked by the process that still works in it (the lock file then names it).
Forked children (DataLoader workers) close their copy of a held lock at once, so that the lock
goes with the process that took it, not seconds later with its last worker.
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


# Set in the environment of the processes a lock holder starts to work in its folder: the
# tokens of the locks (space-separated), and the descriptors of the locked files it inherits.
TOKEN_VARIABLE = "RUN_FOLDER_LOCK_TOKEN"
DESCRIPTOR_VARIABLE = "RUN_FOLDER_LOCK_FDS"
# How long a lock whose recorded holder has ended may stay held by what that process started
# (a child finishing a swap, a worker not yet gone) before a second run is refused.
ENDED_HOLDER_WAIT = 10.0

# The lock descriptors this process holds: closed in forked children (see the module notes).
_held = set()


def _close_held_in_forked_child():
    for descriptor in _held:
        try:
            os.close(descriptor)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_forked_child)


@contextmanager
def run_folder_lock(folder):
    """Hold ``folder``'s lock for the duration of the ``with`` block (see the module notes).

    Yields the environment variables that let a process started inside the block work under
    this lock (pass them through ``handover``)."""
    folder = osp.abspath(folder)
    path = osp.join(folder, LOCK_FILE)
    with reporting_write_errors(folder):
        mkdir_if_missing(folder)
        descriptor, token, parent = _acquire(folder, path)
    try:
        variables = {TOKEN_VARIABLE: token}
        if descriptor is not None and fcntl is not None:  # passing files needs POSIX
            variables[DESCRIPTOR_VARIABLE] = str(descriptor)
        yield variables
    finally:
        if descriptor is not None and descriptor in _held:  # not a forked child's copy
            _release(path, descriptor, parent)


def remove_stale_lock(folder):
    """Remove ``folder``'s lock file when no process holds it (its holder was killed, e.g. a
    protocol script killed after its train.py had finished). Returns whether it did; where
    ``flock`` is missing nothing tells a stale lock, and it is left."""
    path = osp.join(osp.abspath(folder), LOCK_FILE)
    try:
        descriptor = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if _try_flock(descriptor) is not True or not _same_file(descriptor, path):
            return False
        os.remove(path)
        return True
    finally:
        os.close(descriptor)


def handover(*environments):
    """(environment variables, descriptors) that let a child process work under all the locks
    whose ``run_folder_lock`` environments are given: pass the first in ``env`` (with the
    rest of the environment), the second as ``subprocess``'s ``pass_fds``."""
    tokens = [env[TOKEN_VARIABLE] for env in environments]
    descriptors = [env[DESCRIPTOR_VARIABLE] for env in environments if DESCRIPTOR_VARIABLE in env]
    variables = {TOKEN_VARIABLE: " ".join(tokens), DESCRIPTOR_VARIABLE: " ".join(descriptors)}
    return variables, tuple(int(descriptor) for descriptor in descriptors)


def _open(path):
    """The lock file, created if missing; never through a symbolic link (one would have the
    owner record written into whatever it points to)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o666)
    except OSError as error:
        if osp.islink(path):
            raise UserError(f'"{path}" is a symbolic link, not a lock file: delete it (nothing '
                            "writes through it)") from error
        raise


def _acquire(folder, path):
    """(the open, locked lock file, its token, the pid of the process that handed it over);
    the file is None when the process that started this one holds the lock for it and did not
    hand the file over."""
    waited = 0.0
    while True:
        descriptor = _open(path)
        try:
            outcome, token, owner = _lock(folder, path, descriptor, waited < ENDED_HOLDER_WAIT)
        except BaseException:
            os.close(descriptor)
            raise
        if outcome == "locked":
            _held.add(descriptor)
            return descriptor, token, None
        os.close(descriptor)
        if outcome == "held for us":
            inherited = _inherited_descriptor(path)
            if inherited is None:
                return None, token, None
            try:  # name this process in the file: the parent may be killed before it ends
                _write_owner(inherited, token, parent=owner.get("pid"))
            except OSError:
                pass  # a full disk: the file keeps naming the parent (or nobody)
            _held.add(inherited)
            return inherited, token, owner.get("pid")
        if outcome == "ended holder":
            time.sleep(0.2)
            waited += 0.2
        # "replaced": the holder removed the file while releasing it; lock the new one.


def _lock(folder, path, descriptor, may_wait):
    locked = _try_flock(descriptor)
    owner = _read_owner(descriptor)
    if locked is False or (locked is None and _alive_elsewhere(owner)):
        tokens = os.environ.get(TOKEN_VARIABLE, "").split()
        if owner and owner.get("token") and owner["token"] in tokens:
            return "held for us", owner["token"], owner
        if locked is False and may_wait and _ended_here(owner):
            return "ended holder", None, owner
        raise RunFolderBusy(_busy_message(folder, owner))
    if not _same_file(descriptor, path):
        return "replaced", None, owner
    if owner and owner.get("pid") != os.getpid():
        print(f'Note: taking over the lock of "{folder}" from process {owner.get("pid")} on '
              f"{owner.get('host')}, which ended without releasing it")
    with _removing_on_error(path, descriptor):
        return "locked", _write_owner(descriptor), owner


@contextmanager
def _removing_on_error(path, descriptor):
    """Remove the lock file (still locked by us) when recording the holder fails, so that a full
    disk leaves no empty lock file behind."""
    try:
        yield
    except BaseException:
        if _same_file(descriptor, path):
            try:
                os.remove(path)
            except OSError:
                pass
        raise


def _inherited_descriptor(path):
    """The descriptor of ``path``'s locked file that the holder passed to this process (see
    ``handover``), or None. It is taken for this process's own: not inheritable further."""
    try:
        wanted = os.stat(path)
    except OSError:
        return None
    for value in os.environ.get(DESCRIPTOR_VARIABLE, "").split():
        try:
            descriptor = int(value)
            found = os.fstat(descriptor)
        except (ValueError, OSError):
            continue
        if (found.st_dev, found.st_ino) != (wanted.st_dev, wanted.st_ino):
            continue
        if descriptor in _held:  # already ours: a second lock of the folder in this process
            return None
        os.set_inheritable(descriptor, False)
        return descriptor
    return None


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
    return _alive(owner.get("pid"))


def _ended_here(owner):
    """Whether the lock's recorded holder ran on this host and has ended (what it started may
    hold the lock a moment longer)."""
    return bool(owner) and owner.get("host") == socket.gethostname() and not _alive(owner.get("pid"))


def _alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
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


def _write_owner(descriptor, token=None, parent=None):
    """Record this process as the holder; returns the lock's token (a new one unless given:
    a child taking over the lock its parent handed it keeps the parent's)."""
    owner = {
        "token": token or secrets.token_hex(16),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([osp.basename(sys.executable)] + sys.argv),
    }
    if parent is not None:
        owner["parent"] = parent
    os.ftruncate(descriptor, 0)
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, json.dumps(owner).encode())
    os.fsync(descriptor)
    return owner["token"]


def _same_file(descriptor, path):
    try:
        found, held = os.lstat(path), os.fstat(descriptor)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def _release(path, descriptor, parent=None):
    """Remove the lock file (while still locked, so nobody locks the file being removed) and
    close it. A lock handed over by a parent still running is left to the parent; the file is
    removed only while it is this lock's (a swap may have put another in its place)."""
    _held.discard(descriptor)
    if parent is None or os.getppid() != parent:
        if _same_file(descriptor, path):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
    os.close(descriptor)


def _busy_message(folder, owner):
    if not owner:
        who = "another run"
    else:
        who = (f"another run (process {owner.get('pid')} on {owner.get('host')}, started "
               f"{owner.get('started')}: {owner.get('command')})")
        if _ended_here(owner):
            who += ", which has ended, but a process it started still holds the lock"
    return (f'output folder "{folder}" is in use by {who}; wait for it to finish or use another '
            f"--output-dir (if that run is gone, delete {osp.join(folder, LOCK_FILE)})")
