"""Shared helpers of the CoOp-layout datasets (SPEC.md §2).

Split files (``split_zhou_<Name>.json``), the two rules CoOp uses to create a split when none is
published, few-shot sampling with its per-seed cache, the sample hash that runs log, and the
checks that turn a wrong folder into an error naming the path and the DATASETS.md section.
"""
import hashlib
import os
import pickle
import random

from dassl.data.datasets.base_dataset import DatasetError, Datum, sample_few_shot, split_by_label
from dassl.utils import listdir_nohidden, read_json, write_json

SPLIT_KEYS = ("train", "val", "test")
FEWSHOT_FOLDER = "split_fewshot"
PORTABLE_CACHE_FORMAT = "fewshot-relpath-v1"
# Validation images per class in a few-shot sample: min(K, MAX_VAL_SHOTS). Dassl's rule (CoOp's
# datasets call generate_fewshot_dataset(val, num_shots=min(num_shots, 4))); kept so that a seed
# draws the same validation images as there.
MAX_VAL_SHOTS = 4


def docs_ref(section):
    return f"see DATASETS.md §{section}"


def require_dir(path, what, section):
    if not os.path.isdir(path):
        raise DatasetError(f'{what} not found: "{path}" ({docs_ref(section)}).')


def require_file(path, what, section):
    if not os.path.isfile(path):
        raise DatasetError(f'{what} not found: "{path}" ({docs_ref(section)}).')


def path_inside(folder, relpath, origin):
    """``folder/relpath``; raises when it leads outside ``folder`` (an absolute path elsewhere,
    or ``..`` climbing above it), so that a split file or CSV cannot make a run read other files."""
    folder = os.path.normpath(folder)
    path = os.path.normpath(os.path.join(folder, relpath))
    if os.path.commonpath([folder, path]) != folder:
        raise DatasetError(
            f'{origin}: image path "{relpath}" leads outside the image folder "{folder}"; image '
            "paths must be relative to it and stay inside it."
        )
    return path


def prompt_text(classname):
    """The text CLIP reads for a class name: ``_`` as a space (``prompt_classname`` of
    trainers.prompting), spaces collapsed."""
    return " ".join(classname.replace("_", " ").split())


def blank_classnames(classnames):
    """The class names that give CLIP no text at all ("", "   ", "_")."""
    return [name for name in classnames if not prompt_text(name)]


def unreadable_names(names):
    """The names (file or folder names) that are not valid UTF-8: Python reads their bytes as
    surrogates, which no split file, JSON or tokenizer can take."""
    unreadable = []
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            unreadable.append(name)
    return unreadable


def same_prompt_classnames(classnames):
    """Groups of class names that CLIP reads as the same text, and so cannot tell apart: the
    prompts read ``_`` as a space (``prompt_classname`` of trainers.prompting) and CLIP's
    tokenizer lower-cases text and collapses spaces (``sea_lake`` / ``Sea  lake``)."""
    groups = {}
    for name in classnames:
        groups.setdefault(prompt_text(name).lower(), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def portable_path(path, start):
    """``path`` relative to ``start``, with forward slashes (the split files' convention)."""
    return os.path.relpath(path, start).replace(os.sep, "/")


# ---------------------------------------------------------------------------------------------
# Split files: {"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}


def read_split(filepath, path_prefix, keys=SPLIT_KEYS):
    """Read a split file; image paths in it are relative to ``path_prefix``.

    Returns one list of ``Datum`` per key, in the order of ``keys``.
    """
    split = _read_json_file(filepath)
    if not isinstance(split, dict) or any(key not in split for key in keys):
        raise DatasetError(
            f'"{filepath}" is not a split file: expected a JSON object with the lists '
            f'{", ".join(keys)}. Delete it to have it re-created, or download it again.'
        )
    return tuple(_items_from_rows(split[key], path_prefix, filepath, key) for key in keys)


def _read_json_file(filepath):
    try:
        return read_json(filepath)
    except ValueError as error:
        raise DatasetError(
            f'"{filepath}" is not valid JSON ({error}); download it again or delete it.'
        ) from error


def _items_from_rows(rows, path_prefix, filepath, key):
    items = []
    for index, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 3):
            raise DatasetError(
                f'"{filepath}": entry {index} of "{key}" is {row!r}, expected '
                "[relative image path, label, class name]."
            )
        relpath, label, classname = row
        impath = path_inside(path_prefix, relpath, f'"{filepath}", entry {index} of "{key}"')
        items.append(Datum(impath=impath, label=int(label), classname=classname))
    return items


def save_split(train, val, test, filepath, path_prefix):
    """Write a split file, paths relative to ``path_prefix``; a read-only folder only warns.

    Returns whether the file was written.
    """
    split = {
        key: rows_from_items(items, path_prefix)
        for key, items in zip(SPLIT_KEYS, (train, val, test), strict=True)
    }
    saved = try_write_json(split, filepath)
    if saved:
        print(f"Saved split to {filepath}")
    return saved


def rows_from_items(items, path_prefix):
    return [[portable_path(item.impath, path_prefix), item.label, item.classname] for item in items]


def try_write_json(obj, filepath, compact=False):
    """Write a cache-like JSON file; on a read-only data folder say so and carry on.

    ``compact`` drops the indentation (ImageNet's image list would triple in size with it).
    """
    try:
        write_json(obj, filepath, compact=compact)
    except OSError as error:
        print(f"Warning: could not write {filepath} ({error}); it will be recomputed next time")
        return False
    return True


# ---------------------------------------------------------------------------------------------
# The split rules CoOp uses when a dataset ships no split file. Both shuffle with the global
# ``random`` state, so the split depends on the seed of the run that creates it.


def split_trainval(trainval, p_val=0.2):
    """Split per class into train and val (OxfordPets' rule): ``round(n * p_val)`` go to val."""
    print(f"Splitting trainval into {1 - p_val:.0%} train and {p_val:.0%} val")
    train, val = [], []
    for items in split_by_label(trainval).values():
        n_val = round(len(items) * p_val)
        if n_val == 0:
            raise DatasetError(
                f'class "{items[0].classname}" has {len(items)} training images: too few to '
                f"hold out {p_val:.0%} of them for validation."
            )
        items = list(items)
        random.shuffle(items)
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return train, val


def split_per_class(groups, p_trn=0.5, p_val=0.2):
    """Split every class into train / val / test (DTD's rule, 50% / 20% / 30% by default).

    Args:
        groups: ``(label, classname, impaths)`` per class, in label order.
    """
    p_tst = 1 - p_trn - p_val
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {p_tst:.0%} test")
    train, val, test = [], [], []
    for label, classname, impaths in groups:
        impaths = list(impaths)
        random.shuffle(impaths)
        n_total = len(impaths)
        n_train = round(n_total * p_trn)
        n_val = round(n_total * p_val)
        if min(n_train, n_val, n_total - n_train - n_val) <= 0:
            raise DatasetError(
                f'class "{classname}" has {n_total} images: too few to split '
                f"{p_trn:.0%} / {p_val:.0%} / {p_tst:.0%} (each part needs at least one image)."
            )
        parts = (impaths[:n_train], impaths[n_train:n_train + n_val], impaths[n_train + n_val:])
        for output, paths in zip((train, val, test), parts, strict=True):
            output.extend(Datum(impath=path, label=label, classname=classname) for path in paths)
    return train, val, test


def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None):
    """Split an image folder ``<image_dir>/<class>/<image>`` 50/20/30 per class.

    Classes are the sorted sub-folders (minus ``ignored``), labelled in that order and renamed
    through ``new_cnames``. Images are sorted before shuffling so that the split depends on the
    seed only, not on the order in which the file system lists them.
    """
    new_cnames = new_cnames or {}
    categories = sorted(
        name for name in listdir_nohidden(image_dir)
        if name not in ignored and os.path.isdir(os.path.join(image_dir, name))
    )
    unreadable = unreadable_names(categories)
    if unreadable:
        shown = ", ".join(ascii(name.encode("utf-8", "surrogateescape")) for name in unreadable)
        raise DatasetError(f"{image_dir}: class folder names {shown} are not UTF-8 text; rename "
                           "them (the names are the classes CLIP reads).")
    groups = []
    for label, category in enumerate(categories):
        category_dir = os.path.join(image_dir, category)
        impaths = [os.path.join(category_dir, name) for name in sorted(listdir_nohidden(category_dir))]
        groups.append((label, new_cnames.get(category, category), impaths))
    return split_per_class(groups, p_trn=p_trn, p_val=p_val)


# ---------------------------------------------------------------------------------------------
# Few-shot samples and their cache: <dataset>/split_fewshot/shot_{K}-seed_{S}.{pkl,json}


def fewshot_cache_paths(dataset_dir, num_shots, seed):
    """``(legacy .pkl path, portable .json path)`` of the cache for ``num_shots`` and ``seed``."""
    stem = os.path.join(dataset_dir, FEWSHOT_FOLDER, f"shot_{num_shots}-seed_{seed}")
    return stem + ".pkl", stem + ".json"


def fewshot_sample(dataset_dir, num_shots, seed, train, val=None):
    """The few-shot sample of a run: ``{"train": [...], "val": [...]}`` (no "val" if val is None).

    A cache written earlier for the same shots and seed is read back (CoOp's ``.pkl`` files
    first, then our portable ``.json``); otherwise ``num_shots`` per class are sampled from
    ``train`` and then ``min(num_shots, MAX_VAL_SHOTS)`` from ``val`` (SPEC.md §2), and the
    portable cache is written. A negative seed means an unseeded run: its sample is not cached.
    """
    want_val = val is not None
    cached = load_fewshot_cache(dataset_dir, num_shots, seed) if seed >= 0 else None
    if cached is not None and (not want_val or "val" in cached):
        return {key: cached[key] for key in (("train", "val") if want_val else ("train",))}
    print(f"Creating a {num_shots}-shot dataset")
    sample = {"train": sample_few_shot(train, num_shots)}
    if want_val:
        sample["val"] = sample_few_shot(val, min(num_shots, MAX_VAL_SHOTS))
    if seed >= 0:
        save_fewshot_cache(dataset_dir, num_shots, seed, sample)
    return sample


def fewshot_sample_val_from_train(dataset_dir, num_shots, seed, train, test, name):
    """The few-shot sample of a dataset whose val folder is its test set (ImageNet).

    The training images are those ``fewshot_sample`` would pick (SPEC.md §2), so results stay
    comparable with CoOp's; the ``min(num_shots, MAX_VAL_SHOTS)`` validation images per class are
    then drawn, right after them in the random stream, from the training images the sample did
    not take, so that model selection never sees a test image. A cache's training images are
    kept; its validation images too, unless it has none (CoOp's ImageNet caches) or they are test
    images.
    """
    cached = load_fewshot_cache(dataset_dir, num_shots, seed) if seed >= 0 else None
    if cached is None:
        print(f"Creating a {num_shots}-shot dataset")
        sample_train = sample_few_shot(train, num_shots)
    else:
        sample_train = cached["train"]
        problem = _cached_val_problem(cached, test)
        if problem is None:
            return {"train": sample_train, "val": cached["val"]}
        print(
            f"{name}: the cached few-shot sample {problem}; keeping its training images and "
            "drawing the validation images from unused training images"
        )
        # Replaying the training draw puts the validation draw at the same position of the random
        # stream as in an uncached run, so a seed gets the same validation images either way.
        sample_few_shot(train, num_shots)
    unused = unused_items(train, sample_train)
    sample = {"train": sample_train, "val": sample_few_shot(unused, min(num_shots, MAX_VAL_SHOTS))}
    legacy_path, _ = fewshot_cache_paths(dataset_dir, num_shots, seed)
    # A CoOp-era .pkl is read before our .json: it is left as it is and the draw redone each run.
    if seed >= 0 and not os.path.isfile(legacy_path):
        save_fewshot_cache(dataset_dir, num_shots, seed, sample)
    return sample


def _cached_val_problem(cached, test):
    """Why a cache's validation images cannot be used (None when they can)."""
    if "val" not in cached:
        return "has no validation images"
    test_paths = {item.impath for item in test}
    if any(item.impath in test_paths for item in cached["val"]):
        return "takes its validation images from the test set"
    return None


def unused_items(items, taken):
    """``items`` minus those whose image is in ``taken``, in their original order."""
    taken_paths = {item.impath for item in taken}
    return [item for item in items if item.impath not in taken_paths]


def existing_fewshot_cache(dataset_dir, num_shots, seed):
    """The cache file ``load_fewshot_cache`` reads (CoOp's ``.pkl`` first), or None."""
    return next((path for path in fewshot_cache_paths(dataset_dir, num_shots, seed) if os.path.isfile(path)), None)


def load_fewshot_cache(dataset_dir, num_shots, seed):
    path = existing_fewshot_cache(dataset_dir, num_shots, seed)
    if path is None:
        return None
    print(f"Loading preprocessed few-shot data from {path}")
    if path.endswith(".pkl"):
        return read_legacy_pickle(path, dataset_dir)
    return _read_portable_cache(path, dataset_dir)


def save_fewshot_cache(dataset_dir, num_shots, seed, sample):
    _, path = fewshot_cache_paths(dataset_dir, num_shots, seed)
    cache = {"format": PORTABLE_CACHE_FORMAT, "num_shots": num_shots, "seed": seed}
    cache.update({key: rows_from_items(items, dataset_dir) for key, items in sample.items()})
    if try_write_json(cache, path):
        print(f"Saving preprocessed few-shot data to {path}")


def _read_portable_cache(path, dataset_dir):
    cache = _read_json_file(path)
    if not isinstance(cache, dict) or cache.get("format") != PORTABLE_CACHE_FORMAT:
        raise DatasetError(f'"{path}" is not a few-shot cache of this project; delete it.')
    keys = [key for key in ("train", "val") if key in cache]
    return dict(zip(keys, read_split(path, dataset_dir, keys=keys), strict=True))


class _LegacyCacheUnpickler(pickle.Unpickler):
    """Unpickles CoOp's caches, refusing every class but ``Datum`` (a pickle can run code)."""

    ALLOWED = {("dassl.data.datasets.base_dataset", "Datum"): Datum}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset cache")


def read_legacy_pickle(path, dataset_dir):
    """Read a CoOp-era cache: a pickled dict of lists of ``Datum``, their absolute image paths
    re-rooted onto ``dataset_dir`` when written on another machine (see ``relocate``)."""
    try:
        with open(path, "rb") as f:
            data = _LegacyCacheUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise DatasetError(
            f'cannot read the cache "{path}" ({error}); it should be a pickled dict of Datum '
            "lists. Delete it to have it re-created."
        ) from error
    if not isinstance(data, dict) or not all(
        isinstance(items, list) and all(isinstance(item, Datum) for item in items)
        for items in data.values()
    ):
        raise DatasetError(f'"{path}" is not a dict of Datum lists; delete it to have it re-created.')
    for key, items in data.items():
        for index, item in enumerate(items):
            problem = _datum_field_problem(item)
            if problem:
                raise DatasetError(
                    f'"{path}": item {index} of "{key}" has {problem}; the cache is damaged or not '
                    "CoOp's: delete it to have it re-created."
                )
    return {key: relocate(items, dataset_dir, path) for key, items in data.items()}


# The attributes a pickled Datum restores, and their types.
_DATUM_FIELDS = (("_impath", str), ("_label", int), ("_domain", int), ("_classname", str))


def _datum_field_problem(item):
    """What is wrong with an unpickled Datum's attributes (None when nothing is)."""
    for name, kind in _DATUM_FIELDS:
        value = vars(item).get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{name.lstrip('_')} {value!r}, not a {kind.__name__}"
    return None


def relocate(items, dataset_dir, source):
    """Re-root absolute paths written on another machine onto ``dataset_dir``.

    CoOp's caches hold absolute paths such as ``/home/u/data/eurosat/2750/...``. When they do
    not exist here, the part after the last ``/<dataset folder>/`` is joined to ``dataset_dir``.
    """
    if not items or os.path.exists(items[0].impath):
        return items
    old_dir = _old_dataset_dir(items[0].impath, os.path.basename(os.path.normpath(dataset_dir)))
    if old_dir is None:
        return items  # the missing images are reported, by name, when the dataset is built
    print(f"Note: {source} refers to images under {old_dir}; reading them from {dataset_dir}")
    return [
        Datum(
            impath=os.path.normpath(dataset_dir + item.impath[len(old_dir):])
            if item.impath.startswith(old_dir) else item.impath,
            label=item.label,
            domain=item.domain,
            classname=item.classname,
        )
        for item in items
    ]


def _old_dataset_dir(path, folder):
    marker = f"/{folder}/"
    index = path.replace("\\", "/").rfind(marker)
    return None if index < 0 else path[: index + len(marker) - 1]


def load_mat(path, **options):
    """Read a MATLAB file (scipy is needed only to create a split or arrange ImageNet)."""
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise DatasetError(
            f'reading "{path}" needs scipy: pip install scipy.'
        ) from error
    return loadmat(path, **options)


def sample_hash(items, dataset_dir):
    """A short hash of which images (and labels) a sample holds, independent of the machine."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{portable_path(item.impath, dataset_dir)}\t{item.label}\n".encode())
    return digest.hexdigest()[:12]


def check_images_exist(data_sources, name, section):
    """Fail now, naming the file, if an image a split lists is not on disk."""
    paths = {item.impath for source in data_sources if source for item in source}
    missing = sorted(path for path in paths if not os.path.isfile(path))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(
            f'{name}: image listed in the split but missing on disk: "{missing[0]}"{more}. '
            f"The image folder is incomplete or laid out differently ({docs_ref(section)})."
        )
