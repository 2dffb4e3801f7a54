"""dassl.utils.download against a loopback HTTP server (no network needed)."""
import hashlib
import os

import pytest

from dassl.utils import DownloadFailed, download
from tests.helpers.http_server import serve_folder

PAYLOAD = os.urandom(200_000)
HALF = len(PAYLOAD) // 2


@pytest.fixture
def server(tmp_path_factory, monkeypatch):
    yield from serve_folder(tmp_path_factory.mktemp("served"), monkeypatch)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    url = server.publish("data.bin", PAYLOAD)
    target = str(tmp_path / "data.bin")
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:HALF])
    assert download(url, target, hashlib.sha256(PAYLOAD).hexdigest()) == target
    assert server.requests == [("data.bin", f"bytes={HALF}-")]
    assert read(target) == PAYLOAD
    assert os.listdir(tmp_path) == ["data.bin"]


def test_downloaded_file_has_the_permissions_of_a_plain_file(server, tmp_path):
    """Like every file we write: readable by a lab sharing the cache (0o666 minus the umask)."""
    url = server.publish("data.bin", PAYLOAD)
    previous = os.umask(0o022)
    try:
        download(url, str(tmp_path / "data.bin"))
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "data.bin").st_mode & 0o777 == 0o644


def test_broken_transfer_keeps_its_part_for_the_next_call(server, tmp_path):
    url = server.publish("data.bin", PAYLOAD)
    server.cut_once["data.bin"] = HALF
    target = str(tmp_path / "data.bin")
    with pytest.raises(DownloadFailed) as failure:
        download(url, target, hashlib.md5(PAYLOAD).hexdigest(), "md5")
    assert (failure.value.kind, failure.value.url, failure.value.path) == ("interrupted", url, target)
    assert read(target + ".part") == PAYLOAD[:HALF]
    download(url, target, hashlib.md5(PAYLOAD).hexdigest(), "md5")
    assert read(target) == PAYLOAD and server.requests[-1] == ("data.bin", f"bytes={HALF}-")


def test_complete_part_is_accepted_when_the_server_answers_416(server, tmp_path):
    url = server.publish("data.bin", PAYLOAD)
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download(url, str(tmp_path / "data.bin"), hashlib.sha256(PAYLOAD).hexdigest())
    assert read(tmp_path / "data.bin") == PAYLOAD


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_digest_mismatch_leaves_no_file(server, tmp_path, algorithm):
    url = server.publish("data.bin", PAYLOAD)
    wrong = hashlib.new(algorithm, b"something else").hexdigest()
    with pytest.raises(DownloadFailed) as failure:
        download(url, str(tmp_path / "data.bin"), wrong, algorithm)
    assert failure.value.kind == "corrupt"
    assert wrong in failure.value.reason and hashlib.new(algorithm, PAYLOAD).hexdigest() in failure.value.reason
    assert os.listdir(tmp_path) == []


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.ranges = False
    url = server.publish("data.bin", PAYLOAD)
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes that must not stay in front")
    download(url, str(tmp_path / "data.bin"), hashlib.md5(PAYLOAD).hexdigest(), "md5")
    assert server.requests == [("data.bin", "bytes=39-")]  # asked to resume, got the whole file
    assert read(tmp_path / "data.bin") == PAYLOAD


def test_http_error_is_refused_and_writes_nothing(server, tmp_path):
    with pytest.raises(DownloadFailed) as failure:
        download(f"{server.url}/missing.bin", str(tmp_path / "missing.bin"))
    assert failure.value.kind == "refused" and "404" in failure.value.reason
    assert os.listdir(tmp_path) == []


def test_unknown_digest_algorithm_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        download("http://127.0.0.1:9/x", str(tmp_path / "x"), "0", "sha1")
