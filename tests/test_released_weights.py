"""python -m scripts.released_weights against a loopback server standing in for Google Drive:
the MaPLe release layout lands where reproduce.sh reads it, downloads resume, digests are
recorded then checked, and offline use goes through --from-archive."""
import io
import json
import zipfile

import pytest

from scripts import protocols, released_weights
from scripts.released_weights import RemoteFile, ReleaseError
from tests.helpers.http_server import serve_folder


def maple_zip(dataset, wrap=True):
    """A zip in the MaPLe release's layout: <dataset>/base/seed<S>/MultiModalPromptLearner/..."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for part in ("base", "novel"):
            for seed in (1, 2, 3):
                prefix = f"{dataset}/" if wrap else ""
                folder = f"{prefix}{part}/seed{seed}"
                archive.writestr(f"{folder}/log.txt", "log\n")
                if part == "base":
                    archive.writestr(f"{folder}/MultiModalPromptLearner/model.pth.tar-5",
                                     f"weights {dataset} {seed}".encode())
    return buffer.getvalue()


def xd_zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seed in (1, 2, 3):
            archive.writestr(f"imagenet/seed{seed}/MultiModalPromptLearner/model.pth.tar-2", b"w")
    return buffer.getvalue()


@pytest.fixture
def drive(tmp_path_factory, monkeypatch):
    """(server, lister): files served at <url>/<id>; the lister plays the Drive folder."""
    for server in serve_folder(tmp_path_factory.mktemp("drive"), monkeypatch):
        folders = {}

        def lister(folder_id):
            return folders[folder_id]

        server.folders = folders
        yield server, lister


def publish(server, folder_id, files):
    server.folders[folder_id] = []
    for file_id, (path, body) in files.items():
        server.publish(file_id, body)
        server.folders[folder_id].append(RemoteFile(file_id, path))


def get(server, lister, name, dest, **kwargs):
    return released_weights.get(name, dest, lister=lister,
                                download_address=server.url + "/{}", **kwargs)


def test_maple_release_lands_where_reproduce_reads_it(drive, tmp_path):
    server, lister = drive
    maple = released_weights.RELEASES["maple"]
    publish(server, maple.folder_id, {"id-euro": ("eurosat.zip", maple_zip("eurosat")),
                                      "id-dtd": ("dtd.zip", maple_zip("dtd", wrap=False)),
                                      "id-pets": ("oxford_pets.zip", maple_zip("oxford_pets"))})
    dest = tmp_path / "weights"
    usage = get(server, lister, "maple", dest, datasets=["eurosat", "dtd"])
    assert usage == f"bash scripts/maple/reproduce.sh eurosat 1 {dest}"
    assert sorted(name for name, _ in server.requests) == ["id-dtd", "id-euro"]  # not pets
    for dataset in ("eurosat", "dtd"):
        for seed in (1, 2, 3):
            [job, *_] = protocols.jobs_from_arguments("maple", "reproduce",
                                                      [dataset, str(seed), str(dest)], {})
            assert job.model_dir == str(dest / dataset / "base" / f"seed{seed}")
            assert protocols.saved_epochs(job.model_dir) == [5]
    manifest = json.loads((dest / "released_weights.json").read_text())
    assert set(manifest) == {"maple/eurosat.zip", "maple/dtd.zip"}
    assert manifest["maple/dtd.zip"]["bytes"] == len(maple_zip("dtd", wrap=False))
    assert len(manifest["maple/dtd.zip"]["sha256"]) == 64
    assert not (dest / ".downloads").exists() and not (dest / ".unpacking").exists()


def test_cross_dataset_release_shares_the_imagenet_folder(drive, tmp_path):
    server, lister = drive
    publish(server, released_weights.RELEASES["maple"].folder_id,
            {"id-in": ("imagenet.zip", maple_zip("imagenet"))})
    publish(server, released_weights.RELEASES["maple-xd"].folder_id,
            {"id-xd": ("imagenet.zip", xd_zip())})
    dest = tmp_path / "weights"
    get(server, lister, "maple", dest, datasets=["imagenet"])
    get(server, lister, "maple-xd", dest)
    assert sorted(p.name for p in (dest / "imagenet").iterdir()) == [
        "base", "novel", "seed1", "seed2", "seed3"]
    [job] = protocols.jobs_from_arguments("maple", "reproduce_xd", ["food101", "2", str(dest)], {})
    assert job.model_dir == str(dest / "imagenet" / "seed2")


def test_an_interrupted_download_resumes(drive, tmp_path):
    server, lister = drive
    body = maple_zip("eurosat")
    publish(server, released_weights.RELEASES["maple"].folder_id, {"id-euro": ("eurosat.zip", body)})
    server.cut_once["id-euro"] = len(body) // 2
    dest = tmp_path / "weights"
    with pytest.raises(ReleaseError) as error:
        get(server, lister, "maple", dest, datasets=["eurosat"])
    message = str(error.value)
    assert "running again resumes" in message and "--from-archive" in message
    assert "https://drive.google.com/file/d/id-euro/view" in message
    get(server, lister, "maple", dest, datasets=["eurosat"])
    assert server.requests[-1] == ("id-euro", f"bytes={len(body) // 2}-")
    assert protocols.saved_epochs(dest / "eurosat" / "base" / "seed1") == [5]


def test_recorded_digest_is_checked_on_later_runs(drive, tmp_path):
    server, lister = drive
    folder = released_weights.RELEASES["maple"].folder_id
    publish(server, folder, {"id-euro": ("eurosat.zip", maple_zip("eurosat"))})
    dest = tmp_path / "weights"
    get(server, lister, "maple", dest, datasets=["eurosat"])
    publish(server, folder, {"id-euro": ("eurosat.zip", maple_zip("eurosat", wrap=False))})
    with pytest.raises(ReleaseError, match="recorded at its first download"):
        get(server, lister, "maple", dest, datasets=["eurosat"])


def test_a_web_page_instead_of_the_zip_is_refused_and_not_kept(drive, tmp_path):
    server, lister = drive
    publish(server, released_weights.RELEASES["maple"].folder_id,
            {"id-euro": ("eurosat.zip", b"<html>Quota exceeded</html>")})
    dest = tmp_path / "weights"
    with pytest.raises(ReleaseError, match="not a zip archive.*in a browser"):
        get(server, lister, "maple", dest, datasets=["eurosat"])
    assert not list((dest / ".downloads").rglob("*.zip"))
    assert not (dest / "released_weights.json").exists()


def test_offline_listing_and_from_archive(tmp_path, capsys):
    # No network here: listing the real folder fails with advice, then --from-archive works.
    code = released_weights.main(["maple", "--dest", str(tmp_path / "w"), "--datasets", "dtd"])
    assert code == 2
    err = capsys.readouterr().err
    assert "drive.google.com/drive/folders/1-tB6BUDBzs9CXTOJ7p5hM4Svq1tL_mGz" in err
    assert "--from-archive" in err and err.count("\n") <= 3
    archive = tmp_path / "dtd.zip"
    archive.write_bytes(maple_zip("dtd"))
    assert released_weights.main(["maple", "--dest", str(tmp_path / "w"),
                                  "--from-archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert f"bash scripts/maple/reproduce.sh dtd 1 {tmp_path / 'w'}" in out
    assert protocols.saved_epochs(tmp_path / "w" / "dtd" / "base" / "seed3") == [5]


def test_a_missing_dataset_names_what_the_folder_holds(drive, tmp_path):
    server, lister = drive
    publish(server, released_weights.RELEASES["maple"].folder_id,
            {"id-euro": ("eurosat.zip", maple_zip("eurosat"))})
    with pytest.raises(ReleaseError, match="no file for dtd.*eurosat.zip"):
        get(server, lister, "maple", tmp_path / "w", datasets=["dtd"])


def test_list_names_every_release_and_what_is_not_published(capsys):
    assert released_weights.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in released_weights.RELEASES:
        assert name in out
    assert "BMIP" in out and "CoCoOp" in out
