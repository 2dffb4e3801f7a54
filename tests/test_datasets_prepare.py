"""``python -m datasets.prepare`` against archives served on 127.0.0.1 (no network needed)."""
import hashlib
import os
import random
import shutil
import socket
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import pytest

from dassl.data.datasets import DatasetError, build_dataset
from datasets import prepare
from datasets.download import Source, download_url
from datasets.dtd import DescribableTextures
from datasets.eurosat import EuroSAT
from datasets.stanford_cars import StanfordCars
from tests.helpers.datasets import dataset_cfg, make_dtd, make_eurosat, make_imagenet, package_dataset_names, write_image
from tests.helpers.http_server import serve_folder


@pytest.fixture
def served(tmp_path, monkeypatch):
    folder = tmp_path / "served"
    folder.mkdir()
    yield from serve_folder(folder, monkeypatch)


def md5_of(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def publish_eurosat(served_folder, work, monkeypatch, md5=None):
    """Zip a tiny EuroSAT (2750/ at the top, as the real archive) and its split file."""
    dataset_dir = make_eurosat(work, n_classes=3, n_train=4, n_val=2, n_test=3)
    archive = os.path.join(served_folder, "EuroSAT.zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for folder, _, files in os.walk(os.path.join(dataset_dir, "2750")):
            for name in files:
                path = os.path.join(folder, name)
                zf.write(path, os.path.relpath(path, dataset_dir))
    shutil.copy(os.path.join(dataset_dir, "split_zhou_EuroSAT.json"), served_folder)
    monkeypatch.setattr(EuroSAT, "sources", (
        Source("EuroSAT.zip", url="https://example.invalid/EuroSAT.zip", md5=md5 or md5_of(archive), unpack=True),
        Source("split_zhou_EuroSAT.json", gdrive_id="not-used-with-a-mirror"),
    ))
    monkeypatch.setattr(EuroSAT, "published_counts", {"classes": 3, "train": 12, "val": 6, "test": 9})
    return archive


def run(*args):
    return prepare.main([str(arg) for arg in args])


def test_prepare_downloads_extracts_verifies_and_marks(tmp_path, served, monkeypatch, capsys):
    publish_eurosat(served.folder, tmp_path / "work", monkeypatch)
    root = tmp_path / "data"
    assert run("eurosat", "--root", root, "--mirror", served.url) == 0
    assert os.path.isfile(root / "eurosat" / prepare.MARKER)
    assert sorted(os.listdir(root / ".prepare" / "downloads")) == []  # archives removed after success
    random.seed(1)
    dataset = build_dataset(dataset_cfg(root, "EuroSAT"))
    assert dataset.num_classes == 3 and len(dataset.test) == 9

    served.requests.clear()
    assert run("EuroSAT", "--root", root, "--mirror", served.url) == 0  # registry name works too
    assert "already prepared" in capsys.readouterr().out
    assert served.requests == []


def test_checksum_failure_leaves_nothing_that_passes_as_complete(tmp_path, served, monkeypatch, capsys):
    publish_eurosat(served.folder, tmp_path / "work", monkeypatch, md5="0" * 32)
    root = tmp_path / "data"
    assert run("eurosat", "--root", root, "--mirror", served.url) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "Traceback" not in err
    assert not os.path.exists(root / "eurosat")
    assert os.listdir(root / ".prepare" / "downloads") == []  # the corrupt file is gone


def test_interrupted_download_resumes(tmp_path, served, monkeypatch, capsys):
    archive = publish_eurosat(served.folder, tmp_path / "work", monkeypatch)
    half = os.path.getsize(archive) // 2
    served.cut_once["EuroSAT.zip"] = half
    root = tmp_path / "data"

    assert run("eurosat", "--root", root, "--mirror", served.url) == 1
    assert "interrupted" in capsys.readouterr().err
    part = root / ".prepare" / "downloads" / "EuroSAT.zip.part"
    assert os.path.getsize(part) == half
    assert not os.path.exists(root / "eurosat")

    assert run("eurosat", "--root", root, "--mirror", served.url) == 0
    assert ("EuroSAT.zip", f"bytes={half}-") in served.requests
    assert os.path.isfile(root / "eurosat" / prepare.MARKER)


def test_offline_names_the_host_the_options_and_the_manual_layout(tmp_path, monkeypatch, capsys):
    """Unreachable host: no claim of an interrupted transfer or of kept bytes; --archives,
    --mirror and the dataset's manual layout (DATASETS.md section, folder) are named."""
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    root = tmp_path / "data"
    assert run("eurosat", "--root", root) == 1
    err = capsys.readouterr().err
    host = urllib.parse.urlsplit(EuroSAT.sources[0].url).hostname
    assert f"cannot reach {host} to download {EuroSAT.sources[0].filename}" in err
    assert "--archives" in err and "--mirror" in err
    assert f"DATASETS.md §{EuroSAT.docs_section}" in err and str(root / "eurosat") in err
    assert "interrupted" not in err and "bytes are kept" not in err
    assert not os.path.exists(root / ".prepare" / "downloads" / "EuroSAT.zip.part")


def test_a_transfer_that_breaks_off_before_any_byte_claims_nothing_kept(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(urllib.request, "urlopen", broken)
    with pytest.raises(DatasetError, match="broke off before any data arrived") as error:
        download_url("https://example.invalid/a.zip", str(tmp_path / "a.zip"))
    assert "kept" not in str(error.value)


def test_count_mismatch_keeps_the_final_folder_absent(tmp_path, served, monkeypatch, capsys):
    publish_eurosat(served.folder, tmp_path / "work", monkeypatch)
    monkeypatch.setattr(EuroSAT, "published_counts", {"classes": 10, "train": 13500, "val": 5400, "test": 8100})
    root = tmp_path / "data"
    assert run("eurosat", "--root", root, "--mirror", served.url) == 1
    assert "does not match the published counts" in capsys.readouterr().err
    assert not os.path.exists(root / "eurosat")

    monkeypatch.setattr(EuroSAT, "published_counts", {"classes": 3, "train": 12, "val": 6, "test": 9})
    served.requests.clear()
    assert run("eurosat", "--root", root, "--mirror", served.url) == 0
    assert served.requests == []  # the verified downloads were kept for the retry


def test_hand_made_folder_is_checked_with_verify(tmp_path, served, monkeypatch, capsys):
    publish_eurosat(served.folder, tmp_path / "work", monkeypatch)
    make_eurosat(tmp_path / "data", n_classes=3, n_train=4, n_val=2, n_test=3)
    root = tmp_path / "data"
    assert run("eurosat", "--root", root, "--mirror", served.url) == 1
    assert "--verify" in capsys.readouterr().err
    assert run("eurosat", "--root", root, "--verify") == 0
    assert os.path.isfile(root / "eurosat" / prepare.MARKER)


def test_tar_archive_is_unwrapped_into_the_coop_layout(tmp_path, served, monkeypatch):
    dataset_dir = make_dtd(tmp_path / "work")
    archive = os.path.join(served.folder, "dtd-r1.0.1.tar.gz")
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(os.path.join(dataset_dir, "images"), arcname="dtd/images")
    shutil.copy(os.path.join(dataset_dir, "split_zhou_DescribableTextures.json"), served.folder)
    monkeypatch.setattr(DescribableTextures, "sources", (
        Source("dtd-r1.0.1.tar.gz", url="https://example.invalid/dtd.tgz", md5=md5_of(archive), unpack=True),
        Source("split_zhou_DescribableTextures.json", gdrive_id="unused"),
    ))
    monkeypatch.setattr(DescribableTextures, "published_counts", {"classes": 3, "train": 6, "val": 3, "test": 3})
    root = tmp_path / "data"
    assert run("dtd", "--root", root, "--mirror", served.url) == 0
    assert sorted(os.listdir(root / "dtd" / "images")) == ["banded", "blotchy", "braided"]


def test_archives_without_public_address_need_manual_steps(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    assert run("stanford_cars", "--root", tmp_path / "data", "--archives", tmp_path / "mine") == 1
    err = capsys.readouterr().err
    assert "cars_train.tgz" in err and "--archives" in err
    assert StanfordCars.manual_steps.split(".")[0] in err


def test_unknown_name_lists_the_datasets(tmp_path, capsys):
    assert run("cifar10", "--root", tmp_path) == 1
    assert "choose one of: caltech101, dtd, eurosat, " in capsys.readouterr().err


def documented_names():
    """(config name, DATASET.NAME, folder) rows of the table in DATASETS.md."""
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "DATASETS.md")) as f:
        cells = [[cell.strip(" `") for cell in line.strip().strip("|").split("|")] for line in f if line.startswith("| ")]
    return [tuple(row[:3]) for row in cells if row[0] not in ("config name", "---")]


def test_list_shows_the_documented_config_name_first_then_the_registry_name(capsys):
    rows = documented_names()
    assert ("dtd", "DescribableTextures", "dtd") in rows and len(rows) == 15
    assert run("--list") == 0
    listed = [tuple(line.split()[:3]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(listed) == sorted(rows)


@pytest.mark.parametrize("config_name, registry_name, folder", documented_names())
def test_config_and_registry_names_are_both_accepted(config_name, registry_name, folder):
    for name in (config_name, registry_name, registry_name.upper(), folder):
        assert prepare.resolve(name).__name__ == registry_name


# -- ImageNet: archives from --archives, or an existing folder completed in place ------------------

WNIDS = ["n01440764", "n01443537"]


def write_ilsvrc_archives(folder, work):
    """Tiny ILSVRC-2012 files: per-class tars inside the train tar, loose val images, a devkit."""
    np = pytest.importorskip("numpy")
    savemat = pytest.importorskip("scipy.io").savemat
    os.makedirs(work)
    with tarfile.open(os.path.join(folder, "ILSVRC2012_img_train.tar"), "w") as train:
        for label, wnid in enumerate(WNIDS):
            class_tar = os.path.join(work, f"{wnid}.tar")
            with tarfile.open(class_tar, "w") as tf:
                for i in range(3):
                    image = os.path.join(work, f"{wnid}_{i}.JPEG")
                    write_image(image, label, i)
                    tf.add(image, arcname=os.path.basename(image))
            train.add(class_tar, arcname=f"{wnid}.tar")
    val_labels = [2, 1, 2, 1]  # ILSVRC2012_IDs of val images 1..4
    with tarfile.open(os.path.join(folder, "ILSVRC2012_img_val.tar"), "w") as val:
        for i, class_id in enumerate(val_labels):
            image = os.path.join(work, f"ILSVRC2012_val_{i + 1:08d}.JPEG")
            write_image(image, class_id - 1, i)
            val.add(image, arcname=os.path.basename(image))
    devkit = os.path.join(work, "ILSVRC2012_devkit_t12", "data")
    os.makedirs(devkit)
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.array(
        [(1, WNIDS[0], "tench", "a fish", 0), (2, WNIDS[1], "goldfish", "a fish", 0), (3, "n00000001", "fish", "", 2)],
        dtype=fields,
    )
    savemat(os.path.join(devkit, "meta.mat"), {"synsets": synsets})
    with open(os.path.join(devkit, "ILSVRC2012_validation_ground_truth.txt"), "w") as f:
        f.write("".join(f"{class_id}\n" for class_id in val_labels))
    with tarfile.open(os.path.join(folder, "ILSVRC2012_devkit_t12.tar.gz"), "w:gz") as tf:
        tf.add(os.path.dirname(devkit), arcname="ILSVRC2012_devkit_t12")
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write(f"{WNIDS[0]} tench\n{WNIDS[1]} goldfish\n")


def patch_imagenet(monkeypatch, counts):
    from datasets.imagenet import ImageNet

    monkeypatch.setattr(ImageNet, "published_counts", counts)
    monkeypatch.setattr(ImageNet, "sources", tuple(
        Source(s.filename, gdrive_id=s.gdrive_id, unpack=s.unpack, dest=s.dest) for s in ImageNet.sources
    ))  # the tiny archives cannot have the real MD5s


def test_imagenet_is_laid_out_from_the_ilsvrc_archives(tmp_path, monkeypatch):
    archives = tmp_path / "archives"
    archives.mkdir()
    write_ilsvrc_archives(str(archives), str(tmp_path / "work"))
    patch_imagenet(monkeypatch, {"classes": 2, "train": 6, "test": 4})
    root = tmp_path / "data"
    assert run("imagenet", "--root", root, "--archives", archives) == 0
    val_dir = root / "imagenet" / "images" / "val"
    assert sorted(os.listdir(val_dir / WNIDS[1])) == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    assert sorted(os.listdir(root / "imagenet" / "images" / "train" / WNIDS[0])) == [
        f"{WNIDS[0]}_{i}.JPEG" for i in range(3)]
    assert not os.path.exists(root / "imagenet" / ".devkit")
    assert os.path.isfile(archives / "ILSVRC2012_img_train.tar")  # the user's files stay
    random.seed(1)
    dataset = build_dataset(dataset_cfg(root, "ImageNet"))
    assert dataset.classnames == ["tench", "goldfish"]
    assert [item.label for item in dataset.test if item.impath.endswith("00000002.JPEG")] == [0]


def test_existing_imagenet_gets_classnames_and_a_check(tmp_path, served, monkeypatch, capsys):
    root = tmp_path / "data"
    dataset_dir = make_imagenet(root, n_classes=2, n_train=3, n_val=2)
    os.remove(os.path.join(dataset_dir, "classnames.txt"))
    with open(os.path.join(served.folder, "classnames.txt"), "w") as f:
        f.write("n01440764 tench\nn01443537 goldfish\n")
    patch_imagenet(monkeypatch, {"classes": 2, "train": 6, "test": 4})
    assert run("imagenet", "--root", root, "--mirror", served.url) == 0
    assert os.path.isfile(os.path.join(dataset_dir, "classnames.txt"))
    assert os.path.isfile(os.path.join(dataset_dir, prepare.MARKER))
    assert [name for name, _ in served.requests] == ["classnames.txt"]


def test_imagenet_without_archives_shows_the_manual_steps(tmp_path, capsys):
    assert run("imagenet", "--root", tmp_path / "data", "--archives", tmp_path) == 1
    err = capsys.readouterr().err
    assert "ILSVRC2012_img_train.tar" in err and "image-net.org" in err


def test_every_dataset_has_its_docs_section_and_a_way_to_get_each_file():
    from dassl.data.datasets import DATASET_REGISTRY

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "DATASETS.md")) as f:
        headings = {line[3:].strip() for line in f if line.startswith("## ")}
    for name in package_dataset_names():
        cls = DATASET_REGISTRY.get(name)
        assert cls.docs_section in headings, name
        for source in cls.sources:
            assert source.public_address or cls.manual_steps, (name, source.filename)


def write_user_dataset(root, per_class=10):
    for label, classname in enumerate(("rose", "tulip", "daisy")):
        for index in range(per_class):
            write_image(str(root / "my_flowers" / "images" / classname / f"{index}.png"), label, index)


def test_verify_checks_your_own_data_from_its_config(tmp_path, monkeypatch, capsys):
    """A user dataset has nothing to download: --verify takes its config (a path, or a name under
    configs/datasets/), builds it as train.py does, and counts its classes and images."""
    write_user_dataset(tmp_path / "data")
    config = tmp_path / "my_flowers.yaml"
    config.write_text('DATASET:\n  NAME: "UserDataset"\n  USER:\n    DIR: "my_flowers"\n')
    assert run(str(config), "--root", tmp_path / "data", "--verify") == 0
    # 10 images per class split 50% / 20% / 30%
    assert f"{config} (UserDataset): 3 classes, 15 train, 6 val, 9 test - layout OK" in capsys.readouterr().out

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "my_flowers.yaml").write_text(config.read_text())
    monkeypatch.setattr(prepare, "CONFIG_DIR", str(configs))
    assert run("my_flowers", "--root", tmp_path / "data", "--verify") == 0

    (tmp_path / "empty").mkdir()
    assert run(str(config), "--root", tmp_path / "empty", "--verify") == 1
    assert "my_flowers" in capsys.readouterr().err


def test_a_file_as_root_and_a_missing_archives_folder_are_one_line_errors(tmp_path, capsys, served, monkeypatch):
    publish_eurosat(served.folder, tmp_path / "work", monkeypatch)
    (tmp_path / "a_file").write_text("")
    assert run("eurosat", "--root", tmp_path / "a_file") == 1
    assert capsys.readouterr().err == f'error: --root "{tmp_path / "a_file"}" is a file, not a folder: pass the data folder\n'
    assert run("eurosat", "--root", tmp_path / "data", "--archives", tmp_path / "missing", "--mirror", served.url) == 1
    err = capsys.readouterr().err
    assert err == (f'error: --archives "{tmp_path / "missing"}" does not exist: pass the folder that holds the '
                   "downloaded files\n")
    assert served.requests == []  # nothing was downloaded instead
