"""Resumable, verified downloads and safe archive extraction for ``datasets.prepare``.

A download goes to ``<name>.part`` and is renamed to ``<name>`` only once it is complete and its
checksum (when one is known) matches, so a file under its final name is always a good one. An
interrupted download keeps its ``.part`` and resumes with an HTTP range request next time.
"""
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException

from tqdm import tqdm

from dassl.data.datasets.base_dataset import DatasetError

CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Source:
    """One file a dataset is made of.

    Args:
        filename: the file's name (also its name on a ``--mirror`` and in an ``--archives`` folder).
        url: public address; ``None`` if there is none.
        gdrive_id: Google Drive file id (fetched with gdown) when there is no plain address.
        md5: expected MD5 of the file, when known.
        unpack: extract the archive (tar / zip) instead of copying the file.
        dest: folder inside the dataset folder that receives the file or the archive's content.
        local_copy: path under ``--root`` to copy instead of downloading (e.g. the classnames.txt
            of an ImageNet that is already in place).
    """

    filename: str
    url: str = None
    gdrive_id: str = None
    md5: str = None
    unpack: bool = False
    dest: str = "."
    local_copy: str = None

    @property
    def public_address(self):
        if self.url:
            return self.url
        if self.gdrive_id:
            return f"https://drive.google.com/file/d/{self.gdrive_id}/view"
        return None


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path, md5, origin):
    """Remove ``path`` and raise if its MD5 is not ``md5`` (no-op when ``md5`` is None)."""
    if md5 is None:
        return
    actual = file_md5(path)
    if actual != md5:
        os.remove(path)
        raise DatasetError(
            f"checksum mismatch for {origin}: MD5 {actual}, expected {md5}. The corrupt file "
            "was removed; run the same command again to download it afresh."
        )


def fetch(source, downloads_dir, mirror=None, archives_dir=None, root=None):
    """Path of a verified local copy of ``source``, downloading it if needed."""
    if archives_dir and os.path.isfile(os.path.join(archives_dir, source.filename)):
        path = os.path.join(archives_dir, source.filename)
        verify_md5_kept(path, source.md5)
        return path
    if source.local_copy and root and os.path.isfile(os.path.join(root, source.local_copy)):
        return os.path.join(root, source.local_copy)
    path = os.path.join(downloads_dir, source.filename)
    if os.path.isfile(path):
        verify_md5(path, source.md5, path)
        return path
    os.makedirs(downloads_dir, exist_ok=True)
    if mirror:
        download_url(f"{mirror.rstrip('/')}/{source.filename}", path, source.md5)
    elif source.url:
        download_url(source.url, path, source.md5)
    elif source.gdrive_id:
        download_gdrive(source, path)
    else:
        raise DatasetError(
            f'{source.filename} has no public download address: obtain it yourself and put it '
            f'in a folder passed as --archives (or in "{downloads_dir}").'
        )
    return path


def verify_md5_kept(path, md5):
    """Check a user-provided file without deleting it: it is theirs."""
    if md5 is not None and file_md5(path) != md5:
        raise DatasetError(f'"{path}" does not have the expected MD5 {md5}; replace it with a good copy.')


def download_url(url, path, md5=None):
    """Download ``url`` to ``path`` with a progress bar, resuming a previous ``.part``."""
    part = path + ".part"
    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            resumed = offset > 0 and response.status == 206
            if not resumed:
                offset = 0  # the server sent the whole file
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            _copy_with_progress(response, part, offset, total, os.path.basename(path))
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to fetch: the .part is complete
            pass
        else:
            raise DatasetError(f"download of {url} failed: HTTP {error.code} {error.reason}.") from error
    except (urllib.error.URLError, HTTPException, OSError) as error:
        kept = os.path.getsize(part) if os.path.isfile(part) else 0
        raise DatasetError(
            f"download of {url} interrupted ({error}); {kept} bytes are kept in {part}: run the "
            "same command again to resume."
        ) from error
    verify_md5(part, md5, url)
    os.replace(part, path)


def _copy_with_progress(response, part, offset, total, label):
    with open(part, "ab" if offset else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, desc=label
    ) as bar:
        written = offset
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            written += len(block)
            bar.update(len(block))
    if total is not None and written < total:
        raise ConnectionError(f"connection closed after {written} of {total} bytes")


def download_gdrive(source, path):
    """Fetch a Google Drive file with gdown (``.part``, then checksum, then rename)."""
    import gdown

    part = path + ".part"
    try:
        gdown.download(id=source.gdrive_id, output=part, quiet=False, resume=True)
    except Exception as error:  # gdown raises assorted types: quota, permission, network
        raise DatasetError(
            f"could not download {source.filename} from Google Drive ({error}). Download it by "
            f"hand from {source.public_address} and pass its folder as --archives, or run again."
        ) from error
    if not os.path.isfile(part):
        raise DatasetError(
            f"Google Drive did not deliver {source.filename}; download it by hand from "
            f"{source.public_address} and pass its folder as --archives."
        )
    verify_md5(part, source.md5, source.public_address)
    os.replace(part, path)


def place(source, path, dataset_dir):
    """Unpack or copy a fetched file into ``<dataset_dir>/<source.dest>``."""
    target = os.path.normpath(os.path.join(dataset_dir, source.dest))
    os.makedirs(target, exist_ok=True)
    if source.unpack:
        print(f"Extracting {os.path.basename(path)} ...")
        unpack(path, target)
    else:
        shutil.copyfile(path, os.path.join(target, source.filename))


def unpack(archive, target):
    """Extract a tar (any compression) or zip archive, refusing members that leave ``target``."""
    if not os.path.isfile(archive):
        raise DatasetError(f'archive "{archive}" not found; delete the download and run again.')
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _check_member(member, target, archive)
                zf.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="data")
        else:
            raise DatasetError(f'"{archive}" is neither a tar nor a zip archive; delete it and run again.')
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f'cannot extract "{archive}" ({error}); delete it and run again.') from error


def _check_member(member, target, archive):
    destination = os.path.realpath(os.path.join(target, member))
    if not destination.startswith(os.path.realpath(target) + os.sep) and destination != os.path.realpath(target):
        raise DatasetError(f'"{archive}" holds "{member}", which would land outside {target}; refusing.')


def hoist(dataset_dir, subdir):
    """Move the content of ``<dataset_dir>/<subdir>`` up into ``dataset_dir`` and drop the rest
    of ``subdir``'s top folder (archives that wrap the data in extra folders)."""
    source = os.path.join(dataset_dir, subdir)
    if not os.path.isdir(source):
        raise DatasetError(f'expected the archive to contain "{subdir}/"; it does not. Delete the download and run again.')
    for name in os.listdir(source):
        os.replace(os.path.join(source, name), os.path.join(dataset_dir, name))
    top = os.path.join(dataset_dir, subdir.split("/")[0])
    shutil.rmtree(top)
