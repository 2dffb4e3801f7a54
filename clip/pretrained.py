"""OpenAI's released CLIP files: where they live, how they are downloaded and verified, how a
file on disk becomes a state dict."""
import ast
import collections
import io
import json
import os
import pickle
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


class _ModelAddresses(dict):
    """`_MODELS`: OpenAI's model names -> addresses. Trainer files of the CoOp codebase call
    `clip._download(clip._MODELS[MODEL.BACKBONE.NAME])`; a local CLIP file given as the name
    stands for itself there (`_download` returns it), as it does everywhere else."""

    def __getitem__(self, name):
        if name in self:
            return super().__getitem__(name)
        return model_file(name)  # a local file's path, else a one-line ModelFileError


_MODELS = _ModelAddresses(_MODELS)

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
    (resumable and verified: see dassl.utils.download). A local file instead of an address is
    returned as it is (what `_MODELS[path]` gives for a CLIP file).
    """
    if "://" not in url and os.path.isfile(os.path.expanduser(url)):
        return os.path.expanduser(url)
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
        f"model name ({', '.join(available_models())}), nor an open_clip name <model>/<pretrained "
        "tag> (e.g. ViT-B-16/laion2b_s34b_b88k), nor an existing file: check the name, or the "
        "path of a local CLIP file")


SHA256_CACHE_FILE = "sha256-cache.json"  # in the cache folder: path -> size, mtime, SHA-256


def clip_sha256(name_or_path, download_root=None):
    """SHA-256 fingerprint of the CLIP weights a name or path stands for, without downloading:
    an OpenAI name by the digest in its address (its file is verified against it); a local file,
    or the file an open_clip name resolves to where open_clip's download put it
    (clip/openclip.py), hashed once, then read from a cache keyed by path, size and modification
    time (the file ``sha256-cache.json`` in the cache folder). None when there is no such file."""
    if name_or_path in _MODELS:
        return _expected_sha256(_MODELS[name_or_path])
    from . import openclip  # it imports this module

    if openclip.is_open_clip_name(name_or_path):
        name_or_path = openclip.cached_weights_file(name_or_path, download_root)
        if name_or_path is None:
            return None
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
    state dict saved with torch.save, or a checkpoint holding one under "state_dict".

    A TorchScript archive's tensors are read without running any of its code
    (``TorchScriptWeights``); only an archive that cannot be read so is loaded with
    ``torch.jit.load``, and only when it is one of OpenAI's published files (by SHA-256) or
    listed in $TRUSTED_CHECKPOINTS."""
    if _is_torchscript_archive(path):
        try:
            return TorchScriptWeights(path).state_dict()
        except UnreadableWithoutCode as reason:
            return _load_trusted_torchscript(path, reason)
        except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, ValueError,
                RuntimeError, TypeError, IndexError) as error:
            raise ModelFileError(f"CLIP file {path} is a damaged TorchScript archive "
                                 f"({type(error).__name__}: {error}); download it again") from error
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


def _load_trusted_torchscript(path, reason):
    from dassl.utils.torchtools import TRUSTED_CHECKPOINTS_VARIABLE, trusted_checkpoint

    published = {_expected_sha256(url) for url in _MODELS.values()}
    if not trusted_checkpoint(path) and file_digest(path, "sha256") not in published:
        raise ModelFileError(
            f"CLIP file {path} is a TorchScript archive whose weights cannot be read without "
            f"running its code ({reason}), and it is not one of OpenAI's published files; if you "
            f"trust it, allow it with {TRUSTED_CHECKPOINTS_VARIABLE}={path}")
    with warnings.catch_warnings():
        # Only the weights are read; TorchScript's deprecation notice concerns running it.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        return torch.jit.load(path, map_location="cpu").state_dict()


class UnreadableWithoutCode(Exception):
    """A TorchScript archive that holds more than modules and tensors (the reason says what)."""


class _ScriptObject:
    """Stands for an object of a TorchScript class while its archive is read: its state is kept
    as data, and none of the class's code (``__setstate__`` included) runs."""

    qualified_name = None
    state = None

    def __setstate__(self, state):
        self.state = state


class TorchScriptWeights:
    """The parameters and buffers of a ``torch.jit.save`` archive, as ``torch.jit.load(path)
    .state_dict()`` gives them, read as data: ``data.pkl`` is unpickled with only tensors,
    ordered dicts and placeholders for the archive's own classes allowed, and which attributes
    are parameters or buffers comes from the ``__parameters__`` / ``__buffers__`` lines of the
    archive's class definitions, which are parsed, not run."""

    _TYPE_LISTS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist")
    _STORAGE_DTYPES = {f"{name}Storage": getattr(torch, dtype) for name, dtype in (
        ("Float", "float32"), ("Double", "float64"), ("Half", "float16"), ("BFloat16", "bfloat16"),
        ("Long", "int64"), ("Int", "int32"), ("Short", "int16"), ("Char", "int8"),
        ("Byte", "uint8"), ("Bool", "bool"), ("ComplexFloat", "complex64"),
        ("ComplexDouble", "complex128"))}

    def __init__(self, path):
        self.path = path
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
            if len(pickles) != 1:
                raise UnreadableWithoutCode("it has no single <name>/data.pkl")
            self.prefix = pickles[0][: -len("data.pkl")]
            order = archive.read(self.prefix + "byteorder").decode() if self.prefix + "byteorder" in names else "little"
            if order.strip() != "little":
                raise UnreadableWithoutCode(f"its tensors are {order.strip()}-endian")
            self.classes = self._read_classes(archive, names)
            self.archive = archive
            self.storages = {}
            self.root = self._unpickler(archive.read(pickles[0])).load()

    def _read_classes(self, archive, names):
        """``{qualified class name: (is a module, parameters, buffers, which of the two lists
        were found)}`` from the class definitions under ``<name>/code/``."""
        classes = {}
        code = self.prefix + "code/"
        for name in names:
            if not (name.startswith(code) and name.endswith(".py")):
                continue
            module = name[len(code): -len(".py")].replace("/", ".")
            current = None
            for line in archive.read(name).decode("utf-8", "replace").splitlines():
                header = re.match(r"class (\w+)(\((\w+)\))?:", line)
                if header:
                    current = f"{module}.{header.group(1)}"
                    classes[current] = (header.group(3) == "Module", [], [], set())
                    continue
                listed = re.match(r"  __(parameters|buffers)__ = (\[.*\])$", line)
                if listed and current:
                    try:
                        names_listed = ast.literal_eval(listed.group(2))
                    except (ValueError, SyntaxError):
                        raise UnreadableWithoutCode(f"{name} lists {listed.group(1)} unreadably") from None
                    classes[current][1 if listed.group(1) == "parameters" else 2].extend(names_listed)
                    classes[current][3].add(listed.group(1))
        return classes

    def _unpickler(self, data):
        reader = self

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                return reader._global(module, name)

            def persistent_load(self, pid):
                return reader._storage(pid)

        return Unpickler(io.BytesIO(data))

    def _global(self, module, name):
        if module.startswith("__torch__.") or module == "__torch__":
            qualified = f"{module}.{name}"
            return type(name, (_ScriptObject,), {"qualified_name": qualified})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *rest: data
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in self._TYPE_LISTS:
            return list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda value, type_name: value
        if module == "torch" and name in self._STORAGE_DTYPES:
            return self._STORAGE_DTYPES[name]
        raise UnreadableWithoutCode(f"data.pkl refers to {module}.{name}")

    def _storage(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnreadableWithoutCode(f"data.pkl refers to storage {pid!r}")
        dtype, key, _, numel = pid[1:]
        if not isinstance(dtype, torch.dtype):
            raise UnreadableWithoutCode(f"data.pkl refers to storage {pid!r}")
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            flat = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            if flat.numel() != numel:
                raise UnreadableWithoutCode(f"tensor data {key} holds {flat.numel()} values, not {numel}")
            self.storages[key] = flat
        return self.storages[key]

    @staticmethod
    def _rebuild_tensor(storage, offset, size, stride, *rest):
        return storage.as_strided(tuple(size), tuple(stride), offset)

    def state_dict(self):
        state_dict = collections.OrderedDict()
        self._collect(self.root, "", state_dict)
        return state_dict

    def _collect(self, module, prefix, state_dict):
        if not isinstance(module, _ScriptObject) or module.qualified_name not in self.classes:
            raise UnreadableWithoutCode(f"{prefix or 'its top level'} is not a module the archive defines")
        _, parameters, buffers, declared = self.classes[module.qualified_name]
        if declared != {"parameters", "buffers"}:  # a format that does not list them
            raise UnreadableWithoutCode(f"{module.qualified_name} does not list its parameters and buffers")
        attributes = module.state
        if not isinstance(attributes, dict):
            raise UnreadableWithoutCode(f"{module.qualified_name} keeps its state through its own code")
        for name in (*parameters, *buffers):
            if isinstance(attributes.get(name), torch.Tensor):
                state_dict[prefix + name] = attributes[name]
        for name, value in attributes.items():
            if isinstance(value, _ScriptObject) and self.classes.get(value.qualified_name, (False,))[0]:
                self._collect(value, f"{prefix}{name}.", state_dict)


def _is_torchscript_archive(path):
    # torch.jit.save archives carry their constants (and code); torch.save archives do not.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())
