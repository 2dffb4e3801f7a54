"""Fetching a dataset's files for ``datasets.prepare`` (resumable and verified, see
``dassl.utils.download``), and safe archive extraction.
"""
import os
import re
import shutil
import stat
import tarfile
import urllib.parse
import zipfile
from dataclasses import dataclass

from dassl.data.datasets.base_dataset import DatasetError
from dassl.utils.download import DownloadFailed, digest_mismatch, download


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


def verify_md5(path, md5, origin):
    """Remove ``path`` and raise if its MD5 is not ``md5`` (no-op when ``md5`` is None)."""
    mismatch = digest_mismatch(path, md5, "md5")
    if mismatch:
        os.remove(path)
        raise DatasetError(_corrupt_message(origin, mismatch))


def _corrupt_message(origin, mismatch):
    return (f"checksum mismatch for {origin}: {mismatch}. The corrupt file was removed; run the "
            "same command again to download it afresh.")


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
    if digest_mismatch(path, md5, "md5"):
        raise DatasetError(f'"{path}" does not have the expected MD5 {md5}; replace it with a good copy.')


def download_url(url, path, md5=None):
    """Download ``url`` to ``path`` with a progress bar, resuming a previous ``.part``."""
    try:
        download(url, path, md5, "md5")
    except DownloadFailed as failure:
        raise DatasetError(_failure_message(failure)) from failure


def _failure_message(failure):
    if failure.kind == "corrupt":
        return _corrupt_message(failure.url, failure.reason)
    if failure.kind == "refused":
        return f"download of {failure.url} failed: {failure.reason}."
    name = os.path.basename(failure.path)
    if failure.kind == "unreachable":
        host = urllib.parse.urlsplit(failure.url).hostname or failure.url
        return (f"cannot reach {host} to download {name} ({failure.reason}); is this machine "
                f"offline? Download {failure.url} elsewhere and pass its folder with "
                "--archives DIR, or serve the files from a reachable --mirror URL.")
    part = failure.path + ".part"
    kept = os.path.getsize(part) if os.path.isfile(part) else 0
    if not kept:
        return (f"download of {failure.url} broke off before any data arrived ({failure.reason}): "
                "run the same command again.")
    return (f"download of {failure.url} interrupted ({failure.reason}); {kept} bytes are kept in "
            f"{part}: run the same command again to resume.")


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
    """Extract a tar (any compression) or zip archive into ``target``.

    Every member is checked first (``ArchiveMembers``): nothing is written when one of them would
    land outside ``target``, so a crafted archive cannot escape even where ``tarfile``'s own
    ``filter="data"`` can be fooled (CVE-2025-4517, Python before 3.11.13 / 3.12.11 / 3.13.4).
    Members are then written where the check found they land (``NoFollowWriter``), without
    following any link on the way.
    """
    if not os.path.isfile(archive):
        raise DatasetError(f'archive "{archive}" not found; delete the download and run again.')
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = ArchiveMembers(archive, target)
                plan = [members.check_zip(info) for info in zf.infolist()]
                members.extract(plan, zf.open)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = ArchiveMembers(archive, target)
                plan = [members.check_tar(info) for info in tf.getmembers()]
                members.extract(plan, tf.extractfile)
        else:
            raise DatasetError(f'"{archive}" is neither a tar nor a zip archive; delete it and run again.')
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f'cannot extract "{archive}" ({error}); delete it and run again.') from error
    except OSError as error:
        raise DatasetError(f'cannot extract "{archive}" into "{target}": {error.strerror or error}.') from error


class ArchiveMembers:
    """Refuses, member by member in archive order, whatever could write outside ``target``:
    absolute or ``..`` paths, device files and fifos, zip symbolic links, links (or paths through
    links) that resolve outside, and hard links to anything but a regular file already there.
    Links are followed the way the file system will follow them once extracted, from the links
    the archive made so far and those already on disk: pure computation, so no path length or
    ``realpath`` quirk can cut it short. Each new link is checked with every earlier one
    re-resolved, so a link that changes where an earlier one leads (links of links) is seen.

    Each check returns the member's place: ``(kind, components under target, member, extra)``,
    which ``extract`` writes without following anything."""

    MAX_LINK_DEPTH = 40  # the kernel's own limit on nested symbolic links

    def __init__(self, archive, target):
        self.archive = archive
        self.target = target
        self.links = {}  # resolved location of a link made by the archive -> its link text
        self.files = set()  # locations of the regular files the archive makes
        self.dirs = set()  # locations of the folders the archive makes
        self._disk_links = None  # see links_on_disk

    def refuse(self, member, why):
        raise DatasetError(f'"{self.archive}" holds "{member}", {why}; refusing to extract it.')

    def check_zip(self, info):
        self.check_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            self.refuse(info.filename, "a symbolic link (this tool extracts no links from zip files)")
        if info.is_dir():
            return self.make_dir(info.filename, info)
        return self.make_file(info.filename, info)

    def check_tar(self, info):
        self.check_name(info.name)
        if info.isdir():
            return self.make_dir(info.name, info)
        if info.isreg():
            return self.make_file(info.name, info)
        if info.issym():
            return self.make_symlink(info)
        if info.islnk():
            return self.make_hard_link(info)
        self.refuse(info.name, "a device file, fifo or other special file")

    def make_dir(self, name, info):
        location = self.check_location(name)
        self.dirs.add(location)
        return ("dir", location, info, None)

    def make_file(self, name, info):
        location = self.check_location(name, follow_last=False)
        self.replace(name, location)
        self.files.add(location)
        return ("file", location, info, None)

    def make_symlink(self, info):
        location = self.check_location(info.name, follow_last=False)
        self.replace(info.name, location)
        self.links[location] = info.linkname
        for place, text in (*self.links.items(), *self.links_on_disk()):
            if text.startswith("/") or self.resolve(self.join(place[:-1], text)) is None:
                self.refuse(info.name, f'a symbolic link to "{info.linkname}", which makes '
                            f'"{"/".join(place)}" lead outside the target folder')
        return ("symlink", location, info, info.linkname)

    def links_on_disk(self):
        """``(location, text)`` of the links already in the target folder that no member has
        replaced (listed once, when the archive makes its first link)."""
        if self._disk_links is None:
            self._disk_links = {}
            for folder, dirs, files in os.walk(self.target):
                parts = tuple(os.path.relpath(folder, self.target).split(os.sep))
                parts = () if parts == (".",) else parts
                for name in dirs + files:
                    if os.path.islink(os.path.join(folder, name)):
                        self._disk_links[parts + (name,)] = os.readlink(os.path.join(folder, name))
        return [(place, text) for place, text in self._disk_links.items()
                if place not in self.links and place not in self.files and place not in self.dirs]

    def make_hard_link(self, info):
        self.check_name(info.linkname)
        location = self.check_location(info.name, follow_last=False)
        source = self.resolve(info.linkname)
        if source is None:
            self.refuse(info.name, f'a hard link to "{info.linkname}", outside the target folder')
        if not self.is_file(source):
            self.refuse(info.name, f'a hard link to "{info.linkname}", which is not a regular '
                        "file made by an earlier member")
        self.replace(info.name, location)
        self.files.add(location)
        return ("hardlink", location, info, source)

    def replace(self, name, location):
        """A file or link takes ``location``: whatever link stood there is gone."""
        if location in self.dirs or os.path.isdir(self.on_disk(location)) and not self.link_text(location):
            self.refuse(name, "a file where the archive or the target folder has a folder")
        self.links.pop(location, None)
        self.files.discard(location)

    def is_file(self, location):
        if location in self.files:
            return True
        if location in self.dirs or location in self.links:
            return False
        try:
            return stat.S_ISREG(os.lstat(self.on_disk(location)).st_mode)
        except OSError:
            return False

    def on_disk(self, location):
        return os.path.join(self.target, *location)

    def check_location(self, name, follow_last=True):
        location = self.resolve(name, follow_last=follow_last)
        if location is None:
            self.refuse(name, "whose path goes through a link that leads outside the target folder")
        if not location:
            self.refuse(name, "which would replace the target folder itself")
        return location

    def check_name(self, name):
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            self.refuse(name, "an absolute path")
        if ".." in re.split(r"[/\\]", name):
            self.refuse(name, 'a path with ".."')

    @staticmethod
    def join(parts, path):
        return "/".join((*parts, path))

    def resolve(self, path, follow_last=True, depth=0):
        """The components (under ``target``) where ``path`` lands, or None when it leaves it."""
        if depth > self.MAX_LINK_DEPTH:
            return None
        resolved = ()
        names = [name for name in path.split("/") if name not in ("", ".")]
        for index, name in enumerate(names):
            if name == "..":
                if not resolved:
                    return None
                resolved = resolved[:-1]
                continue
            link = self.link_text(resolved + (name,))
            if link is None or (index == len(names) - 1 and not follow_last):
                resolved += (name,)
                continue
            if link.startswith("/"):
                return None
            resolved = self.resolve(self.join(resolved, link), depth=depth + 1)
            if resolved is None:
                return None
        return resolved

    def link_text(self, parts):
        if parts in self.links:
            return self.links[parts]
        if parts in self.files or parts in self.dirs:
            return None
        on_disk = self.on_disk(parts)
        return os.readlink(on_disk) if os.path.islink(on_disk) else None

    def extract(self, plan, open_member):
        """Write the checked members; ``open_member(info)`` gives a member's content."""
        os.makedirs(self.target, exist_ok=True)
        with NoFollowWriter(self.target) as writer:
            for kind, location, info, extra in plan:
                if kind == "dir":
                    writer.folder(location)
                elif kind == "file":
                    with open_member(info) as content:
                        writer.file(location, content)
                elif kind == "symlink":
                    writer.symlink(location, extra)
                else:
                    writer.hard_link(location, extra)


class NoFollowWriter:
    """Makes files, folders and links at given components under ``root``, opening every folder on
    the way with ``O_NOFOLLOW``: a link met where a folder should be (one the archive made, or one
    swapped in meanwhile) is an error, never followed."""

    def __init__(self, root):
        self.root = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self.opened = (None, None)  # the last parent folder: (components, descriptor)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.forget()
        os.close(self.root)

    def forget(self):
        if self.opened[1] is not None:
            os.close(self.opened[1])
        self.opened = (None, None)

    def parent(self, location):
        """A descriptor of the folder ``location[:-1]``, made if missing."""
        parts = location[:-1]
        if self.opened[0] == parts:
            return self.opened[1]
        self.forget()
        descriptor = os.dup(self.root)
        try:
            for name in parts:
                try:
                    os.mkdir(name, 0o777, dir_fd=descriptor)
                except FileExistsError:
                    pass
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
                os.close(descriptor)
                descriptor = inner
        except BaseException:
            os.close(descriptor)
            raise
        self.opened = (parts, descriptor)
        return descriptor

    def clear(self, location):
        """Remove a file or link at ``location`` (a member replacing an earlier one)."""
        try:
            os.unlink(location[-1], dir_fd=self.parent(location))
        except FileNotFoundError:
            pass

    def folder(self, location):
        self.parent(location + ("",))

    def file(self, location, content):
        self.clear(location)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(location[-1], flags, 0o666, dir_fd=self.parent(location)), "wb") as out:
            shutil.copyfileobj(content, out, 1 << 20)

    def symlink(self, location, text):
        self.clear(location)
        os.symlink(text, location[-1], dir_fd=self.parent(location))

    def hard_link(self, location, source):
        self.clear(location)
        source_dir = os.dup(self.parent(source))
        try:
            os.link(source[-1], location[-1], src_dir_fd=source_dir, dst_dir_fd=self.parent(location),
                    follow_symlinks=False)
        finally:
            os.close(source_dir)


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
