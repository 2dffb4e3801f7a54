"""clip.load from local files, and downloads from a loopback HTTP server (no network needed)."""
import hashlib
import os
import re
import urllib.error
import urllib.request
import warnings

import pytest
import torch
from PIL import Image

import clip
from clip import pretrained
from clip.model import build_model
from clip.pretrained import ModelFileError
from dassl.utils import UserError
from tests.helpers.clip_files import make_resnet_state_dict, make_vit_state_dict, write_clip_file
from tests.helpers.http_server import serve_folder

PAYLOAD = os.urandom(300_000)


@pytest.fixture(scope="module")
def vit_state_dict():
    return make_vit_state_dict()


def features(model):
    batch = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.encode_image(batch), model.encode_text(clip.tokenize(["a cat", "a dog"]))


def assert_same_model(model, state_dict):
    assert model.dtype == torch.float32 and not model.training
    for ours, expected in zip(features(model), features(build_model(state_dict))):
        torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("torchscript", [False, True])
def test_load_local_file(tmp_path, vit_state_dict, torchscript):
    path = write_clip_file(tmp_path / "tiny.pt", vit_state_dict, torchscript=torchscript)
    model, preprocess = clip.load(path)
    assert_same_model(model, vit_state_dict)
    assert model.visual.input_resolution == 32


def test_load_checkpoint_wrapping_a_state_dict(tmp_path, vit_state_dict):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": vit_state_dict, "epoch": 3}, path)
    model, _ = clip.load(str(path))
    assert_same_model(model, vit_state_dict)


def test_load_resnet_torchscript_archive(tmp_path):
    state_dict = make_resnet_state_dict(image_resolution=64)
    model, preprocess = clip.load(write_clip_file(tmp_path / "rn.pt", state_dict, torchscript=True))
    assert model.visual.input_resolution == 64
    assert preprocess(Image.new("RGB", (100, 80))).shape == (3, 64, 64)


def test_preprocess_is_openai_normalisation(tmp_path, vit_state_dict):
    _, preprocess = clip.load(write_clip_file(tmp_path / "tiny.pt", vit_state_dict))
    color = (255, 0, 128)
    image = preprocess(Image.new("RGB", (60, 45), color))
    assert image.shape == (3, 32, 32)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    for channel in range(3):
        expected = (color[channel] / 255 - mean[channel]) / std[channel]
        torch.testing.assert_close(image[channel], torch.full((32, 32), expected))
    gray = preprocess(Image.new("L", (32, 32), 255))
    assert gray.shape == (3, 32, 32)


def test_unknown_name_or_missing_file_lists_available_models(tmp_path):
    """Both are user errors (train.py prints them in one line) naming OpenAI's models."""
    for name in ("ViT-Z/99", str(tmp_path / "missing.pt")):
        with pytest.raises(ModelFileError, match=f"{re.escape(name)}.*RN50, RN101.*ViT-B/16"):
            clip.load(name, download_root=str(tmp_path))
    assert issubclass(ModelFileError, UserError)


def test_file_that_is_not_a_clip_state_dict(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelFileError, match="other.pt: not an OpenAI CLIP state dict"):
        clip.load(str(path))
    path.write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="neither a TorchScript archive"):
        clip.load(str(path))


def test_available_models_are_openai_names_with_digests():
    assert clip.available_models() == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
                                       "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    for url in clip._MODELS.values():
        assert url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert len(url.split("/")[-2]) == 64


# --- downloads --------------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path_factory, monkeypatch):
    yield from serve_folder(tmp_path_factory.mktemp("served"), monkeypatch)


def publish(server, name, body, digest=None):
    """Serve `body`; return its _MODELS-style address (with `digest`, default the true one)."""
    digest = digest or hashlib.sha256(body).hexdigest()
    return server.publish(f"clip/models/{digest}/{name}", body)


def sha256_of(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_download_is_verified_and_cached(server, tmp_path):
    url = publish(server, "Tiny.pt", PAYLOAD)
    path = clip._download(url, str(tmp_path))
    assert path == str(tmp_path / "Tiny.pt")
    assert sha256_of(path) == url.split("/")[-2]
    assert os.listdir(tmp_path) == ["Tiny.pt"]
    assert clip._download(url, str(tmp_path)) == path
    assert len(server.requests) == 1  # the second call used the cache


def test_cache_dir_from_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "cache"))
    url = publish(server, "Tiny.pt", PAYLOAD)
    assert clip._download(url) == str(tmp_path / "cache" / "Tiny.pt")


def test_load_by_name_downloads_then_builds(server, tmp_path, vit_state_dict, monkeypatch):
    body = open(write_clip_file(tmp_path / "src.pt", vit_state_dict, torchscript=True), "rb").read()
    monkeypatch.setitem(pretrained._MODELS, "Tiny/8", publish(server, "Tiny-8.pt", body))
    model, _ = clip.load("Tiny/8", download_root=str(tmp_path / "cache"))
    assert_same_model(model, vit_state_dict)
    assert os.listdir(tmp_path / "cache") == ["Tiny-8.pt"]


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    url = publish(server, "Tiny.pt", PAYLOAD, digest="0" * 64)
    with pytest.raises(pretrained.DownloadError, match="SHA-256"):
        clip._download(url, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_corrupted_cached_file_is_downloaded_again(server, tmp_path):
    url = publish(server, "Tiny.pt", PAYLOAD)
    (tmp_path / "Tiny.pt").write_bytes(PAYLOAD[:1000])
    with pytest.warns(UserWarning, match="does not match its SHA-256"):
        path = clip._download(url, str(tmp_path))
    assert sha256_of(path) == url.split("/")[-2] and len(server.requests) == 1


@pytest.mark.parametrize("server_supports_ranges", [True, False])
def test_interrupted_download_leaves_no_valid_looking_file(server, tmp_path,
                                                           server_supports_ranges):
    server.ranges = server_supports_ranges
    url = publish(server, "Tiny.pt", PAYLOAD)
    server.cut_once[url.removeprefix(server.url + "/")] = len(PAYLOAD) // 2  # half, then close
    with pytest.raises(pretrained.DownloadError, match="Could not download"):
        clip._download(url, str(tmp_path))
    assert not (tmp_path / "Tiny.pt").exists()

    path = clip._download(url, str(tmp_path))
    assert sha256_of(path) == url.split("/")[-2]
    assert os.listdir(tmp_path) == ["Tiny.pt"]
    resumed_from = server.requests[-1][1]
    assert resumed_from == f"bytes={len(PAYLOAD) // 2}-"  # the client asked to resume


def test_no_network_says_where_to_put_the_file(tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(pretrained.DownloadError) as error:
        clip.load("ViT-B/16", download_root=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "ViT-B-16.pt") in message
    assert "MODEL.BACKBONE.NAME /path/to/ViT-B-16.pt" in message
    assert clip._MODELS["ViT-B/16"] in message
    assert os.listdir(tmp_path) == []


def scripted_module_file(tmp_path, monkeypatch, name, source):
    """A TorchScript archive of the module ``M`` defined by ``source`` (a file is needed: TorchScript
    compiles from source it reads with inspect)."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = str(tmp_path / f"{name}.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        torch.jit.save(torch.jit.script(__import__(name).M()), path)
    return path


TRAP = '''
import torch


@torch.jit.script
class Trap(object):
    def __init__(self):
        self.x = 1

    def __getstate__(self) -> int:
        return self.x

    def __setstate__(self, state: int) -> None:
        self.x = state + torch.from_file("{victim}", shared=True, size=16).numel()


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(4.0))
        self.trap = Trap()
{extra}
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
'''

KEEPS_ITS_STATE_IN_CODE = '''
    @torch.jit.export
    def __getstate__(self) -> torch.Tensor:
        return self.weight

    @torch.jit.export
    def __setstate__(self, state: torch.Tensor) -> None:
        self.weight = state + 0 * torch.from_file("{victim}", shared=True, size=4)
        self.trap = Trap()
        self.training = False
'''


def test_a_torchscript_file_is_read_without_running_its_code(tmp_path, monkeypatch):
    """Issue 20 §2: a ``__setstate__`` that creates a file when ``torch.jit.load`` runs it."""
    victim = tmp_path / "written-by-the-model-file"
    path = scripted_module_file(tmp_path, monkeypatch, "trap_model", TRAP.format(victim=victim, extra=""))
    state_dict = pretrained.read_state_dict(path)
    assert list(state_dict) == ["weight"] and torch.equal(state_dict["weight"], torch.arange(4.0))
    assert not victim.exists()


def test_a_torchscript_file_that_needs_its_code_is_loaded_only_when_trusted_or_published(tmp_path, monkeypatch):
    victim = tmp_path / "written-by-the-model-file"
    path = scripted_module_file(tmp_path, monkeypatch, "stateful_model",
                                TRAP.format(victim=victim, extra=KEEPS_ITS_STATE_IN_CODE.format(victim=victim)))
    monkeypatch.delenv("TRUSTED_CHECKPOINTS", raising=False)
    with pytest.raises(ModelFileError, match=f"allow it with TRUSTED_CHECKPOINTS={re.escape(path)}$"):
        pretrained.read_state_dict(path)
    assert not victim.exists()
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    monkeypatch.setitem(pretrained._MODELS, "Published", f"https://example.invalid/{digest}/x.pt")
    assert list(pretrained.read_state_dict(path)) == ["weight"]  # one of OpenAI's files: loaded
    assert victim.exists()
    victim.unlink()
    monkeypatch.delitem(pretrained._MODELS, "Published")
    monkeypatch.setenv("TRUSTED_CHECKPOINTS", str(tmp_path))
    assert list(pretrained.read_state_dict(path)) == ["weight"]
    assert victim.exists()


@pytest.mark.parametrize("make", [make_vit_state_dict, make_resnet_state_dict])
def test_torchscript_weights_read_as_data_equal_torch_jit_load(tmp_path, make):
    path = write_clip_file(tmp_path / "clip.pt", make(), torchscript=True)
    ours = pretrained.TorchScriptWeights(path).state_dict()
    with pytest.warns(FutureWarning):
        theirs = torch.jit.load(path).state_dict()
    assert list(ours) == list(theirs)
    for key, tensor in theirs.items():
        assert ours[key].dtype == tensor.dtype and ours[key].stride() == tensor.stride()
        assert torch.equal(ours[key], tensor), key


def test_a_damaged_torchscript_archive_is_a_one_line_error(tmp_path, vit_state_dict):
    import zipfile

    path = write_clip_file(tmp_path / "clip.pt", vit_state_dict, torchscript=True)
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data[: len(data) // 2] if info.filename.endswith("data.pkl") else data)
    with pytest.raises(ModelFileError, match="damaged TorchScript archive"):
        pretrained.read_state_dict(str(damaged))
