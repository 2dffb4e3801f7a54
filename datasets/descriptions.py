"""CoPrompt's per-class LLM descriptions: data published with the CoPrompt code (one JSON file per
dataset, class name -> sentences), fetched by ``python -m datasets.prepare NAME --root $DATA
--coprompt-descriptions`` into ``<root>/coprompt_descriptions/`` and checked against the MD5 of
the published file. Never part of this repository.
"""
import json
import os

from dassl.data.datasets import DatasetError
from dassl.utils.tools import atomic_write

from datasets.download import Source, fetch

FOLDER = "coprompt_descriptions"
# The CoPrompt commit the files are read from (ShuvenduRoy/CoPrompt, gpt_file/).
COMMIT = "a2a6c12e3622cfe4b3a127f4ba0c4f3eb841418c"
BASE_URL = f"https://raw.githubusercontent.com/ShuvenduRoy/CoPrompt/{COMMIT}/gpt_file"

# DATASET.NAME -> (file name, MD5 of the published file; None where we could not read the file
# to take it, so the download is not checked).
FILES = {
    "Caltech101": ("caltech_prompt.json", "10b1352cc79ffd94716c66584c7daa4c"),
    "DescribableTextures": ("dtd_prompt.json", "c08fd0770487bca15b4b7929b256a22a"),
    "EuroSAT": ("eurosat_prompt.json", "c7722dc824ad12e7a6b797fb7dcc7c8c"),
    "FGVCAircraft": ("fgvc_prompt.json", "c69f7a7e6654c91fd623ce0a7b080b04"),
    "Food101": ("food101_prompt.json", "8154e9c4c36f037d4c6a463b418c2d85"),
    "OxfordFlowers": ("oxford_flowers_prompt.json", "233c30cb2074934722648f74e5785183"),
    "OxfordPets": ("oxford_pets_prompt.json", "928888128a80f620adf9a7f91acff60a"),
    "StanfordCars": ("stanford_cars_prompt.json", "ad52b27e28d7f1db9875f0c5d421d978"),
    "SUN397": ("sun397_prompt.json", "ffee592507b98a598512c9710dfefbe8"),
    "UCF101": ("ucf101_prompt.json", "f74d31c22de8660aee148e65cc604767"),
    "ImageNet": ("imagenet_prompt.json", None),
    "ImageNetA": ("imagenet_a_prompt.json", None),
    "ImageNetR": ("imagenet_r_prompt.json", None),
    "ImageNetSketch": ("imagenet_sketch_prompt.json", None),
    "ImageNetV2": ("imagenetv2_prompt.json", None),
}


def _entry(dataset_name):
    if dataset_name not in FILES:
        raise DatasetError(f"CoPrompt publishes no class descriptions for {dataset_name}: write "
                           "your own JSON file (class name -> list of sentences) and set "
                           "TRAINER.COPROMPT.DESCRIPTIONS to its path")
    return FILES[dataset_name]


def default_path(root, dataset_name):
    """Where ``prepare --coprompt-descriptions`` puts the file of `dataset_name`."""
    return os.path.join(os.path.abspath(os.path.expanduser(root)), FOLDER,
                        _entry(dataset_name)[0])


def fetch_descriptions(dataset_name, root, mirror=None, archives_dir=None):
    """Download (or take from `archives_dir`) the descriptions of `dataset_name`, checked
    against their MD5, to default_path(root, dataset_name); returns that path."""
    filename, md5 = _entry(dataset_name)
    target = default_path(root, dataset_name)
    if os.path.isfile(target):
        print(f"CoPrompt descriptions of {dataset_name} are already in {target}")
        return target
    if md5 is None:
        print(f"Note: no checksum is known for {filename}; it is downloaded unchecked")
    source = Source(filename, url=f"{BASE_URL}/{filename}", md5=md5)
    try:
        path = fetch(source, os.path.dirname(target), mirror=mirror, archives_dir=archives_dir)
    except DatasetError as error:
        raise DatasetError(
            f"{error}\nWithout network access: download {source.url} elsewhere and pass its folder "
            f"as --archives, or put the file at {target}, or point "
            "TRAINER.COPROMPT.DESCRIPTIONS at it.") from error
    if path != target:  # taken from --archives: copied, whole or not at all
        with open(path, "rb") as src, atomic_write(target, binary=True) as dst:
            dst.write(src.read())
    print(f"CoPrompt descriptions of {dataset_name} are in {target}")
    return target


def load_descriptions(path, classnames):
    """Each class's sentences, in the order of `classnames` (looked up as CoPrompt does, with
    underscores read as spaces); a clear error for a missing file or class."""
    if not os.path.isfile(path):
        raise DatasetError(f'CoPrompt class descriptions not found at "{path}". Fetch them with '
                           "python -m datasets.prepare <dataset> --root <DATA> "
                           "--coprompt-descriptions, or set TRAINER.COPROMPT.DESCRIPTIONS to a "
                           "JSON file of your own (class name -> list of sentences)")
    table = _read_table(path)
    names = [name.replace("_", " ") for name in classnames]
    missing = [name for name in names if not table.get(name)]
    if missing:
        raise DatasetError(f'"{path}" has no descriptions for {len(missing)} classes, e.g. '
                           f"{missing[:3]}: it must map every class name to a list of sentences")
    # A string would be read as its characters, one "sentence" each.
    malformed = [name for name in names if not isinstance(table[name], list)
                 or not all(isinstance(sentence, str) and sentence.strip() for sentence in table[name])]
    if malformed:
        found = table[malformed[0]]
        raise DatasetError(f'"{path}": the descriptions of {len(malformed)} classes are not lists of '
                           f"sentences, e.g. {malformed[0]!r}: {_shown(found)}; write each class as "
                           '"class name": ["a sentence", "another sentence"]')
    return [list(table[name]) for name in names]


def _read_table(path):
    """The JSON object of a descriptions file; a one-line error for a file that is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except UnicodeDecodeError as error:
        raise DatasetError(f'CoPrompt class descriptions "{path}" are not UTF-8 text ({error.reason} '
                           f"at byte {error.start}): save the file as UTF-8") from error
    except (ValueError, RecursionError) as error:
        raise DatasetError(f'CoPrompt class descriptions "{path}" are not valid JSON '
                           f"({' '.join(str(error).split())[:200]})") from error
    if not isinstance(table, dict):
        raise DatasetError(f'CoPrompt class descriptions "{path}" hold {_shown(table)}, not a JSON '
                           "object mapping each class name to a list of sentences")
    return table


def _shown(value):
    text = json.dumps(value)
    return f"a {type(value).__name__} ({text[:60]}{'...' if len(text) > 60 else ''})"
