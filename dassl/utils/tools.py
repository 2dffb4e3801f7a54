"""Small file-system, JSON, seeding and environment helpers."""
import errno
import json
import os
import os.path as osp
import random
import secrets
import stat
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from .errors import UserError
from .run_files import LOCK_FILE, TEMPORARY_PREFIX

try:
    import fcntl
except ImportError:  # Windows: abandoned temporary files are told by their age alone
    fcntl = None


class WriteError(UserError, OSError):
    """A file cannot be written (disk full, file too large, read-only folder, a folder in its
    place); the message names the file and the cause in one line."""


_WRITE_ADVICE = {
    errno.ENOSPC: "the disk is full: free space, then run the same command again",
    errno.EDQUOT: "the disk quota is used up: free space, then run the same command again",
    errno.EFBIG: "the file would exceed the largest size allowed here (file system, or ulimit -f)",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "permission denied: choose a folder you can write to",
    errno.EISDIR: "a folder stands where the file should be: move it away",
    errno.ENOTDIR: "a file stands where a folder should be: move it away",
}


def write_error(path, error):
    """The one-line ``WriteError`` for ``error``, an OSError raised while writing ``path``; None
    when the error is not one of those a user fixes on the disk (it is then re-raised as is)."""
    if isinstance(error, WriteError) or error.errno not in _WRITE_ADVICE:
        return None
    failure = WriteError(f'cannot write "{path}": {error.strerror or error}; {_WRITE_ADVICE[error.errno]}')
    failure.errno = error.errno
    return failure


@contextmanager
def reporting_write_errors(path):
    """Turn the disk-side OSErrors of writing ``path`` into a ``WriteError``."""
    try:
        yield
    except OSError as error:
        failure = write_error(path, error)
        if failure is None:
            raise
        raise failure from error


def mkdir_if_missing(dirname):
    """Create ``dirname`` (and parents) unless it exists; safe when another process races us."""
    if not dirname:
        return
    try:
        os.makedirs(dirname, exist_ok=True)
    except OSError as error:
        if error.errno != errno.EEXIST:
            raise


def check_isfile(fpath):
    """Return True if ``fpath`` is a file; otherwise warn and return False (Dassl semantics)."""
    isfile = osp.isfile(fpath)
    if not isfile:
        print(f'Warning: no file found at "{fpath}"')
    return isfile


def read_json(fpath):
    with open(fpath, "r") as f:
        return json.load(f)


NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # absent on Windows, which has no such links to fear


def open_no_follow(fpath, mode):
    """``open(fpath, mode)`` for mode "w", "wb", "a" or "ab" that never writes through a
    symbolic link standing at ``fpath`` (it fails instead, with ``ELOOP``)."""
    flags = os.O_WRONLY | os.O_CREAT | NO_FOLLOW | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    return os.fdopen(os.open(fpath, flags, 0o666), mode)


@contextmanager
def atomic_write(fpath, binary=False):
    """Open a file for writing whose content appears under ``fpath`` only once complete.

    The data go to a temporary file beside ``fpath`` that replaces it in one rename, so a reader
    (or a resumed run) never sees half a file; on error the temporary file is removed and
    ``fpath`` is left as it was. The data are flushed to the disk before the rename and the
    rename itself after it (``fsync`` of the file, then of the folder), so that a power loss
    leaves the old file or the new one, never an empty one. The file gets the permissions of any
    newly created file (0o666 minus the umask), not tempfile.mkstemp's private 0o600: a lab
    sharing $DATA or output/ must be able to read each other's split caches, results and
    checkpoints.
    """
    directory = osp.dirname(osp.abspath(fpath))
    tmp_path = osp.join(directory, f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}-{osp.basename(fpath)}")
    with reporting_write_errors(fpath):
        mkdir_if_missing(directory)
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o666)
        _lock_while_writing(fd)
        try:
            with os.fdopen(fd, "wb" if binary else "w") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, fpath)
        except BaseException:
            if osp.exists(tmp_path):
                os.remove(tmp_path)
            raise
        fsync_folder(directory)


def fsync_folder(directory):
    """Make the entries of ``directory`` (a rename, a removal) durable; a no-op where folders
    cannot be opened (Windows) or synced (some network file systems)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


def remove_temporary_files(folder):
    """Remove the temporary files that writes killed halfway through left in ``folder`` and in
    its sub-folders (not in those another run holds, see ``run_lock``). Returns their paths.

    Call it only while holding ``folder``'s lock: a live write's temporary file looks the same."""
    removed = []
    for directory in [folder] + sorted(
        path for path in (osp.join(folder, name) for name in _listdir(folder))
        if osp.isdir(path) and not osp.islink(path) and not osp.exists(osp.join(path, LOCK_FILE))
    ):
        for name in _listdir(directory):
            path = osp.join(directory, name)
            if name.startswith(TEMPORARY_PREFIX) and osp.isfile(path):
                os.remove(path)
                removed.append(path)
    return removed


# A temporary file that no write locks and that has not changed for this long is abandoned.
ABANDONED_AFTER = 60.0  # seconds


def _lock_while_writing(descriptor):
    """Lock an atomic write's temporary file for as long as its writer has it open (the lock
    goes with the writer), so that remove_abandoned_temporary_files leaves it alone."""
    if fcntl is None:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # a file system without locks: the file's age tells


def remove_abandoned_temporary_files(folder):
    """Remove the temporary files that writes killed halfway through left in ``folder`` (not
    its sub-folders), a folder that runs share without a lock (a dataset's split file and
    few-shot caches): those no live write holds (see ``atomic_write``) and unchanged for
    ``ABANDONED_AFTER`` seconds. A file that cannot be removed (read-only folder) is left.
    Returns the paths removed."""
    removed = []
    for name in _listdir(folder):
        path = osp.join(folder, name)
        if not name.startswith(TEMPORARY_PREFIX):
            continue
        try:
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # removed meanwhile, a link, unreadable
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode) or time.time() - status.st_mtime < ABANDONED_AFTER:
                continue
            if fcntl is not None:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live write
                except OSError:
                    pass
            os.remove(path)
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(descriptor)
    return removed


def _listdir(folder):
    return sorted(os.listdir(folder)) if osp.isdir(folder) else []


def write_json(obj, fpath, compact=False):
    """Write ``obj`` as indented JSON (``compact``: no whitespace, for large files); the file
    appears atomically (see ``atomic_write``)."""
    with atomic_write(fpath) as f:
        if compact:
            json.dump(obj, f, separators=(",", ":"))
        else:
            json.dump(obj, f, indent=4, separators=(",", ": "))


def listdir_nohidden(path, sort=False):
    """List ``path`` without hidden entries (names starting with a dot)."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    if sort:
        items.sort()
    return items


def set_random_seed(seed):
    """Seed Python, NumPy and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def collect_env_info():
    """A printable summary of the software and hardware a run used."""
    import platform

    import PIL
    import torchvision

    lines = [
        f"Python: {sys.version.split()[0]} ({platform.platform()})",
        f"PyTorch: {torch.__version__}",
        f"Torchvision: {torchvision.__version__}",
        f"NumPy: {np.__version__}",
        f"Pillow: {PIL.__version__}",
        f"CUDA available: {torch.cuda.is_available()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"CUDA: {torch.version.cuda}")
        for index in range(torch.cuda.device_count()):
            lines.append(f"GPU {index}: {torch.cuda.get_device_name(index)}")
    lines.append(f"CPU threads used by torch: {torch.get_num_threads()}")
    return "\n".join(lines)


class ImageError(UserError, OSError):
    """An image file cannot be decoded (corrupt, truncated, or not an image)."""


class ImageNotFoundError(ImageError, FileNotFoundError):
    """An image file does not exist."""


def read_image(path):
    """Open ``path`` as an RGB PIL image; a missing or broken file raises an ImageError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise ImageNotFoundError(
            f'image file not found: "{path}". Check DATASET.ROOT and the dataset layout.'
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageError(
            f'image "{path}" is too large to decode safely ({error.args[0].split(" exceeds")[0]}; '
            f"PIL refuses more than {2 * Image.MAX_IMAGE_PIXELS} pixels as a possible decompression "
            "bomb): shrink it, or remove it from the dataset"
        ) from error
    except OSError as error:
        raise ImageError(
            f'cannot read image "{path}" ({error}); the file is corrupt or not an image: '
            "replace it with a good copy (re-download the dataset, see DATASETS.md)"
        ) from error
