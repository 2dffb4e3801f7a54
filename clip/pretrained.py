"""OpenAI's released CLIP files: where they live, how they are downloaded and verified, how a
file on disk becomes a state dict."""
import json
import os
import re
import warnings
import zipfile

import torch

from dassl.utils.download import DownloadFailed, digest_mismatch, download, file_digest, folder_lock
from dassl.utils.errors import UserError
from dassl.utils.tools import write_json

# Each address ends in /<sha256 of the file>/<file name>.
_MODELS = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "https://openaipublic.azureedge.net/clip/models/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "https://openaipublic.azureedge.net/clip/models/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "https://openaipublic.azureedge.net/clip/models/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}

CACHE_DIR_ENV = "CLIP_CACHE_DIR"
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(UserError, RuntimeError):
    """A CLIP file could not be downloaded or did not match its SHA-256."""


class ModelFileError(UserError, RuntimeError):
    """A CLIP model name that is not OpenAI's, a missing local file, or a file that is not CLIP."""


def available_models():
    return list(_MODELS)


def default_cache_dir():
    return os.environ.get(CACHE_DIR_ENV) or os.path.expanduser("~/.cache/clip")


def _expected_sha256(url):
    digest = url.rstrip("/").split("/")[-2]
    if not _SHA256_PATTERN.match(digest):
        raise ValueError(f"{url}: the address must end in /<sha256>/<file name>, "
                         "so the download can be verified")
    return digest


def _download(url, root=None):
    """Path of the verified file for `url` in `root` (default: $CLIP_CACHE_DIR or ~/.cache/clip),
    downloading it first when it is missing or does not match the SHA-256 in the address
    (resumable and verified: see dassl.utils.download).
    """
    root = os.path.expanduser(root or default_cache_dir())
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, os.path.basename(url.rstrip("/")))
    expected = _expected_sha256(url)
    with folder_lock(root):
        if os.path.isfile(target):
            if digest_mismatch(target, expected) is None:
                return target
            warnings.warn(f"{target} does not match its SHA-256 {expected}; downloading it again", stacklevel=2)
            os.remove(target)
        try:
            return download(url, target, expected, "sha256")
        except DownloadFailed as failure:
            raise DownloadError(_failure_message(failure)) from failure


def _failure_message(failure):
    if failure.kind == "corrupt":
        return (f"Downloaded {failure.url} but its {failure.reason}; the partial file was "
                "deleted. Run again to download it afresh.")
    name = os.path.basename(failure.path)
    resume = ""
    if failure.kind == "interrupted" and os.path.isfile(failure.path + ".part"):
        resume = f"\nThe transfer broke off: run again to resume from {name}.part."
    return (
        f"Could not download {failure.url} ({failure.reason}).\n"
        f"Without network access, download that file elsewhere and put it at\n"
        f"    {os.path.abspath(failure.path)}\n"
        f"(the cache folder is set by download_root or ${CACHE_DIR_ENV}; the file must have "
        f"SHA-256 {_expected_sha256(failure.url)}),\n"
        f"or give a local file instead of the name: MODEL.BACKBONE.NAME /path/to/{name}.{resume}")


def model_file(name_or_path, download_root=None):
    """Local path of a CLIP file: an OpenAI model name (downloaded if needed) or a file path."""
    if name_or_path in _MODELS:
        return _download(_MODELS[name_or_path], download_root)
    path = os.path.expanduser(name_or_path)
    if os.path.isfile(path):
        return path
    raise ModelFileError(
        f"CLIP model {name_or_path!r} (MODEL.BACKBONE.NAME / --backbone) is neither an OpenAI "
        f"model name ({', '.join(available_models())}) nor an existing file: check the name, "
        "or the path of a local CLIP file")


SHA256_CACHE_FILE = "sha256-cache.json"  # in the cache folder: path -> size, mtime, SHA-256


def clip_sha256(name_or_path, download_root=None):
    """SHA-256 fingerprint of the CLIP weights a name or path stands for, without downloading:
    an OpenAI name by the digest in its address (its file is verified against it); a local file
    hashed once, then read from a cache keyed by path, size and modification time (the file
    ``sha256-cache.json`` in the cache folder). None when there is no such file."""
    if name_or_path in _MODELS:
        return _expected_sha256(_MODELS[name_or_path])
    path = os.path.abspath(os.path.expanduser(name_or_path))
    if not os.path.isfile(path):
        return None
    stat = os.stat(path)
    key = [stat.st_size, stat.st_mtime_ns]
    cache_file = os.path.join(os.path.expanduser(download_root or default_cache_dir()),
                              SHA256_CACHE_FILE)
    entry = _read_sha256_cache(cache_file).get(path)
    if entry and entry[:2] == key:
        return entry[2]
    digest = file_digest(path, "sha256")
    try:  # a cache that cannot be written only costs hashing again
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with folder_lock(os.path.dirname(cache_file)):
            write_json({**_read_sha256_cache(cache_file), path: [*key, digest]}, cache_file)
    except OSError:
        pass
    return digest


def _read_sha256_cache(cache_file):
    try:
        with open(cache_file) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def read_state_dict(path):
    """The OpenAI-format state dict in `path`: a TorchScript archive (as OpenAI ships them), a
    state dict saved with torch.save, or a checkpoint holding one under "state_dict"."""
    if _is_torchscript_archive(path):
        with warnings.catch_warnings():
            # Only the weights are read; TorchScript's deprecation notice concerns running it.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
            return torch.jit.load(path, map_location="cpu").state_dict()
    try:
        # Memory-mapped where the format allows (zip archives; copy-on-write, the file is never
        # written): the weights are read once, by the copy into the model, not copied twice.
        loaded = torch.load(path, map_location="cpu", weights_only=True,
                            mmap=zipfile.is_zipfile(path))
    except Exception as error:
        raise ModelFileError(f"CLIP file {path} is neither a TorchScript archive nor a torch.save "
                             f"state dict that loads with weights_only=True: {error}") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelFileError(f"CLIP file {path} holds a {type(loaded).__name__}, not a CLIP state dict")
    return loaded


def _is_torchscript_archive(path):
    # torch.jit.save archives carry their constants (and code); torch.save archives do not.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())
