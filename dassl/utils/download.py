"""Resumable, verified HTTP downloads (CLIP weights, dataset archives).

A file is streamed to ``<path>.part`` and renamed to ``path`` only once it is complete and its
digest matches, so a file under its final name is always a good one. A transfer that breaks off
keeps its ``.part``; the next call resumes it with an HTTP Range request, or starts over when the
server ignores ranges. Callers turn :class:`DownloadFailed` into advice for their own users.
"""
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from contextlib import contextmanager

from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: concurrent downloads into one folder are not serialised there
    fcntl = None

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
DIGEST_NAMES = {"sha256": "SHA-256", "md5": "MD5"}


class DownloadFailed(Exception):
    """``url`` could not be downloaded to ``path``; ``kind`` says how, ``reason`` says why:

    - "refused": the server answered with an HTTP error (e.g. "HTTP 404 Not Found");
    - "unreachable": no connection to the server (no network, unknown host, refused, timed out);
    - "interrupted": the transfer broke off; the bytes received stay in ``<path>.part`` and the
      next call resumes from them;
    - "corrupt": the file arrived whole but its digest does not match; it was removed.
    """

    def __init__(self, url, path, kind, reason):
        super().__init__(f"download of {url} to {path} {kind}: {reason}")
        self.url, self.path, self.kind, self.reason = url, path, kind, reason


def file_digest(path, algorithm="sha256"):
    """The hex digest of the file at ``path``."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_mismatch(path, expected, algorithm="sha256"):
    """Why ``path`` is not the file whose digest is ``expected``, or None when it is (or when
    ``expected`` is None: nothing to check)."""
    if expected is None:
        return None
    actual = file_digest(path, algorithm)
    return None if actual == expected else f"{DIGEST_NAMES[algorithm]} is {actual}, expected {expected}"


def download(url, path, expected_digest=None, algorithm="sha256"):
    """Download ``url`` to ``path`` with a progress bar and return ``path``; see the module notes.

    ``algorithm`` ("sha256" | "md5") names the digest ``expected_digest`` is written in.
    Raises DownloadFailed.
    """
    if algorithm not in DIGEST_NAMES:
        raise ValueError(f"unknown digest {algorithm!r}: use one of {', '.join(DIGEST_NAMES)}")
    partial = path + ".part"
    try:
        _stream(url, partial, label=os.path.basename(path))
    except urllib.error.HTTPError as error:
        raise DownloadFailed(url, path, "refused", f"HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:  # urlopen found no server to talk to
        raise DownloadFailed(url, path, "unreachable", str(error.reason)) from error
    except (OSError, http.client.HTTPException) as error:
        raise DownloadFailed(url, path, "interrupted", str(error)) from error
    mismatch = digest_mismatch(partial, expected_digest, algorithm)
    if mismatch:
        os.remove(partial)
        raise DownloadFailed(url, path, "corrupt", mismatch)
    os.replace(partial, path)
    return path


def _stream(url, partial, label):
    """Append the rest of ``url`` to ``partial`` (all of it when the server ignores the range).
    Raises ConnectionError if the connection closes before the announced size."""
    done = os.path.getsize(partial) if os.path.isfile(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done:  # the range starts at the end: the .part is complete
            return
        raise
    with response:
        if response.status != 206:  # the server sent the whole file: start over
            done = 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        # Never through a link standing at the .part's place (O_NOFOLLOW: it fails instead).
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_APPEND if done else os.O_TRUNC)
        with os.fdopen(os.open(partial, flags, 0o666), "ab" if done else "wb") as out, tqdm(
                total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, ncols=80) as progress:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                progress.update(len(chunk))
    written = os.path.getsize(partial)
    if total is not None and written != total:
        raise ConnectionError(f"connection closed after {written} of {total} bytes")


@contextmanager
def folder_lock(folder):
    """Serialise downloads into one folder between processes (parallel runs on a fresh machine
    would otherwise write the same ``.part`` file). Locking the folder leaves no lock file."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            pass  # file systems without locks (some NFS set-ups): the digest check still guards
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
