"""Archive extraction refuses every member that could write outside the dataset folder (issue 10 §1).

The archives are crafted here; each one is extracted into ``<tmp>/box/target`` and nothing may
appear in ``<tmp>/box`` besides ``target``.
"""
import io
import os
import stat
import tarfile
import zipfile

import pytest

from datasets import prepare
from datasets.download import ArchiveMembers, Source, unpack
from datasets.eurosat import EuroSAT
from dassl.data.datasets import DatasetError


def tar_bytes(*members):
    """A tar of ``(TarInfo, payload or None)`` pairs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for info, payload in members:
            if payload is not None:
                info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, (b"data" if kind == tarfile.REGTYPE else None)


def cve_2025_4517_tar(hidden=False):
    """Symbolic links through directories with names so long that the expanded path exceeds
    PATH_MAX: os.path.realpath gives up and tarfile's "data" filter (Python < 3.11.13) lets the
    last link point outside, so that "escape/outside.txt" is written next to the target.
    ``hidden``: the escaping link is a hard link to a symbolic link "q/r/escape" -> "s/../..",
    which stays inside where it stands ("q/r/s" leads to "q/r/t/u") and leads outside from the
    top folder, where "s" leads through the long chain to the top folder itself."""
    long_name, steps, members, path = "d" * 247, "abcdefghijklmnop", [], ""
    for step in steps:
        members.append(member(os.path.join(path, long_name), tarfile.DIRTYPE))
        members.append(member(os.path.join(path, step), tarfile.SYMTYPE, long_name))
        path = os.path.join(path, long_name)
    link_path = os.path.join("/".join(steps), "l" * 254)
    members.append(member(link_path, tarfile.SYMTYPE, "../" * len(steps)))
    if hidden:
        members.append(member("s", tarfile.SYMTYPE, link_path))
        members.append(member("q/r/t/u", tarfile.DIRTYPE))
        members.append(member("q/r/s", tarfile.SYMTYPE, "t/u"))
        members.append(member("q/r/escape", tarfile.SYMTYPE, "s/../.."))
        members.append(member("escape", tarfile.LNKTYPE, "q/r/escape"))
    else:
        members.append(member("escape", tarfile.SYMTYPE, link_path + "/.."))
    members.append(member("escape/outside.txt"))
    return tar_bytes(*members)


ESCAPING_TARS = {
    "absolute path": lambda: tar_bytes(member("/tmp/outside.txt")),
    "dot-dot path": lambda: tar_bytes(member("images/../../outside.txt")),
    "symlink to an absolute path": lambda: tar_bytes(member("link", tarfile.SYMTYPE, "/etc")),
    "symlink upwards": lambda: tar_bytes(member("sub/link", tarfile.SYMTYPE, "../../")),
    "file through a symlink": lambda: tar_bytes(member("up", tarfile.SYMTYPE, ".."), member("up/outside.txt")),
    "symlink chain": lambda: tar_bytes(
        member("a/l", tarfile.SYMTYPE, ".."), member("b", tarfile.SYMTYPE, "a/l/.."), member("b/outside.txt")),
    "hard link outside": lambda: tar_bytes(member("hard", tarfile.LNKTYPE, "../outside.txt")),
    "hard link through a symlink": lambda: tar_bytes(
        member("up", tarfile.SYMTYPE, ".."), member("hard", tarfile.LNKTYPE, "up/secret")),
    "character device": lambda: tar_bytes(member("tty", tarfile.CHRTYPE)),
    "fifo": lambda: tar_bytes(member("pipe", tarfile.FIFOTYPE)),
    "CVE-2025-4517 long symlink chain": cve_2025_4517_tar,
    "CVE-2025-4517 chain hidden behind a hard link to a symlink": lambda: cve_2025_4517_tar(hidden=True),
    "hard link to a symlink": lambda: tar_bytes(
        member("a/b/s", tarfile.SYMTYPE, "../.."), member("h", tarfile.LNKTYPE, "a/b/s"), member("h/box/outside.txt")),
    "link made to escape by a later link": lambda: tar_bytes(
        member("a/s", tarfile.SYMTYPE, "d/../.."), member("a/d", tarfile.SYMTYPE, "..")),
    "hard link to a later member": lambda: tar_bytes(member("h", tarfile.LNKTYPE, "later"), member("later")),
    "hard link to a folder": lambda: tar_bytes(member("d", tarfile.DIRTYPE), member("h", tarfile.LNKTYPE, "d")),
}


@pytest.fixture
def box(tmp_path):
    target = tmp_path / "box" / "target"
    target.mkdir(parents=True)
    (tmp_path / "box" / "secret").write_text("not yours")
    return target


def assert_nothing_outside(target):
    assert sorted(os.listdir(target.parent)) == ["secret", "target"]
    assert (target.parent / "secret").read_text() == "not yours"


@pytest.mark.parametrize("case", sorted(ESCAPING_TARS))
def test_tar_members_that_leave_the_target_are_refused_before_anything_is_written(tmp_path, box, case):
    archive = tmp_path / "archive.tar"
    archive.write_bytes(ESCAPING_TARS[case]())
    with pytest.raises(DatasetError, match="refusing to extract it"):
        unpack(str(archive), str(box))
    assert_nothing_outside(box)
    assert os.listdir(box) == []


def test_links_that_stay_inside_are_extracted(tmp_path, box):
    archive = tmp_path / "archive.tar"
    archive.write_bytes(tar_bytes(
        member("images/cat/1.jpg"), member("images/dog", tarfile.SYMTYPE, "cat"),
        member("images/cat/up", tarfile.SYMTYPE, "../cat"), member("images/2.jpg", tarfile.LNKTYPE, "images/cat/1.jpg"),
        member("images/deep/er/3.jpg", tarfile.SYMTYPE, "../../cat/1.jpg"),
        member("images/4.jpg", tarfile.LNKTYPE, "images/deep/er/3.jpg"),
        member("images/dog/5.jpg"),
    ))
    unpack(str(archive), str(box))
    assert (box / "images" / "dog" / "1.jpg").read_bytes() == b"data"
    assert (box / "images" / "2.jpg").read_bytes() == b"data"
    # a hard link to a symbolic link is a hard link to the file it leads to, not a second link
    # whose text would lead elsewhere from its new folder
    assert not (box / "images" / "4.jpg").is_symlink()
    assert os.path.samefile(box / "images" / "4.jpg", box / "images" / "cat" / "1.jpg")
    # written where the link leads, without the link being followed
    assert (box / "images" / "cat" / "5.jpg").read_bytes() == b"data"
    assert_nothing_outside(box)


def zip_with_symlink(path):
    with zipfile.ZipFile(path, "w") as zf:
        link = zipfile.ZipInfo("2750/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../..")
        zf.writestr("2750/link/outside.txt", "data")


@pytest.mark.parametrize("name", ["../outside.txt", "/tmp/outside.txt"])
def test_zip_paths_that_leave_the_target_are_refused(tmp_path, box, name):
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), "data")
    with pytest.raises(DatasetError, match="refusing to extract it"):
        unpack(str(archive), str(box))
    assert_nothing_outside(box)


def test_prepare_refuses_a_crafted_archive_in_one_line(tmp_path, box, monkeypatch, capsys):
    """Through ``python -m datasets.prepare NAME --archives DIR``, with a source without checksum."""
    archives = tmp_path / "mine"
    archives.mkdir()
    (archives / "EuroSAT.tar").write_bytes(cve_2025_4517_tar())
    zip_with_symlink(archives / "EuroSAT.zip")
    root = box
    for filename in ("EuroSAT.tar", "EuroSAT.zip"):
        monkeypatch.setattr(EuroSAT, "sources", (Source(filename, url="https://example.invalid/x", unpack=True),))
        assert prepare.main(["eurosat", "--root", str(root), "--archives", str(archives)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refusing to extract it" in err and "Traceback" not in err
        assert_nothing_outside(box)


def test_extraction_follows_no_link_swapped_in_after_the_check(tmp_path, box, monkeypatch):
    """Members are written where the check found they land, with ``O_NOFOLLOW`` on the way: a
    folder replaced by a link between check and extraction is an error, not a path (even a link
    that stays inside, which tarfile's own filter lets through)."""
    archive = tmp_path / "archive.tar"
    archive.write_bytes(tar_bytes(member("images", tarfile.DIRTYPE), member("images/outside.txt")))
    check = ArchiveMembers.check_tar

    def check_then_swap(self, info):
        placed = check(self, info)
        if info.name == "images/outside.txt":
            (box / "elsewhere").mkdir()
            os.symlink("elsewhere", box / "images")
        return placed

    monkeypatch.setattr(ArchiveMembers, "check_tar", check_then_swap)
    with pytest.raises(DatasetError, match="cannot extract"):
        unpack(str(archive), str(box))
    assert os.listdir(box / "elsewhere") == []


def test_an_escaping_tar_is_refused_by_prepare_in_one_line(tmp_path, box, monkeypatch, capsys):
    """The report's path: ``python -m datasets.prepare stanford_cars --archives A`` (no checksum)."""
    archives = tmp_path / "mine"
    archives.mkdir()
    (archives / "cars.tar").write_bytes(cve_2025_4517_tar(hidden=True))
    monkeypatch.setattr(EuroSAT, "sources", (Source("cars.tar", url="https://example.invalid/x", unpack=True),))
    assert prepare.main(["eurosat", "--root", str(box), "--archives", str(archives)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to extract it" in err and "Traceback" not in err
    assert_nothing_outside(box)


def test_a_link_already_in_the_folder_made_to_escape_by_a_member_is_refused(tmp_path, box):
    """A link left by an earlier archive ("a/s" -> "d/../..", inside while "a/d" is a folder) that a
    new member would make lead outside ("a/d" -> "..")."""
    (box / "a").mkdir()
    os.symlink("d/../..", box / "a" / "s")
    archive = tmp_path / "archive.tar"
    archive.write_bytes(tar_bytes(member("a/d", tarfile.SYMTYPE, "..")))
    with pytest.raises(DatasetError, match="refusing to extract it"):
        unpack(str(archive), str(box))
    assert not (box / "a" / "d").is_symlink()
