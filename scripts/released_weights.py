"""The authors' released weights, downloaded into the layout the reproduce scripts read.

    python -m scripts.released_weights RELEASE --dest FOLDER [--datasets D ...] [--from-archive FILE ...]
    python -m scripts.released_weights --list

MaPLe's authors publish their weights as Google Drive folders (MaPLe docs/RUN.md, README "Model
Zoo"): one zip per dataset for base-to-new (<dataset>/base/seed<S>/..., <dataset>/novel/...)
and one for the ImageNet model of cross-dataset / domain generalisation (imagenet/seed<S>/).
This command lists the folder, downloads the files (resumable: an interrupted file continues
from its .part; see dassl.utils.download), unpacks the zips into FOLDER and checks that every
seed folder holds a checkpoint. Then, e.g.:

    bash scripts/maple/reproduce.sh eurosat 1 FOLDER
    bash scripts/maple/reproduce_xd.sh food101 1 FOLDER

Checksums: the authors publish none. The SHA-256 and size of every file are recorded in
FOLDER/released_weights.json at its first download and checked on every later run, so a
changed or damaged file is noticed; a digest listed in RELEASES (none yet) is checked first.
Without network access, download the files in a browser from the address shown and pass them
with --from-archive (they are checked and unpacked the same way).
"""
import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scripts.protocols import BASE2NEW_DATASETS, XD_SOURCE

MANIFEST = "released_weights.json"
DRIVE_FOLDER = "https://drive.google.com/drive/folders/{}"
DRIVE_FILE = "https://drive.google.com/file/d/{}/view"
# Google Drive's direct-download address (confirm=t skips the "cannot scan for viruses" page).
DRIVE_DOWNLOAD = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"


@dataclass(frozen=True)
class Release:
    """A published set of weights."""
    description: str
    source: str                    # where the address is published
    folder_id: str = ""            # a Google Drive folder of files (zips or checkpoints)
    file_id: str = ""              # or a single Google Drive file
    per_dataset: bool = True       # one zip per dataset: --datasets picks which
    expected: tuple = ()           # relative seed folders that must hold a checkpoint
    usage: str = ""                # the command that evaluates them
    sha256: dict = field(default_factory=dict)  # <release>/<file> -> digest where published (none)

    @property
    def address(self):
        return DRIVE_FOLDER.format(self.folder_id) if self.folder_id else DRIVE_FILE.format(self.file_id)


SEED_FOLDERS = tuple(f"seed{seed}" for seed in (1, 2, 3))
RELEASES = {
    "maple": Release(
        "MaPLe, base-to-new: one zip per dataset, <dataset>/base/seed1-3 (+ novel/ logs)",
        "muzairkhattak/multimodal-prompt-learning docs/RUN.md",
        folder_id="1-tB6BUDBzs9CXTOJ7p5hM4Svq1tL_mGz",
        expected=tuple(f"{{dataset}}/base/{seed}" for seed in SEED_FOLDERS),
        usage="bash scripts/maple/reproduce.sh {dataset} 1 {dest}"),
    "maple-xd": Release(
        "MaPLe, ImageNet model for cross-dataset / domain generalisation: imagenet/seed1-3",
        "muzairkhattak/multimodal-prompt-learning docs/RUN.md",
        folder_id="1bmhvmNZc13WJ5U71qt0t8k91wyuoemVF", per_dataset=False,
        expected=tuple(f"{XD_SOURCE}/{seed}" for seed in SEED_FOLDERS),
        usage="bash scripts/maple/reproduce_xd.sh food101 1 {dest}"),
    "vpt": Release(
        "Deep vision prompting (MaPLe's VPT), weights and logs (layout as MaPLe's, RUN.md)",
        "muzairkhattak/multimodal-prompt-learning README, Model Zoo",
        folder_id="1zJnaod8UVvo1HuxNzymLhBBS_OHq6cYp",
        expected=tuple(f"{{dataset}}/base/{seed}" for seed in SEED_FOLDERS),
        usage="bash scripts/vpt/reproduce.sh {dataset} 1 {dest}"),
    "language-prompting": Release(
        "Deep language prompting (IVLP, language only), weights and logs (layout as MaPLe's)",
        "muzairkhattak/multimodal-prompt-learning README, Model Zoo",
        folder_id="1PPLtvQIGprRUyxPiTwOSEh_oQ46zQfCN",
        expected=tuple(f"{{dataset}}/base/{seed}" for seed in SEED_FOLDERS),
        usage="bash scripts/language-prompting/reproduce_lp.sh {dataset} 1 {dest}"),
    "ivlp": Release(
        "Independent V-L prompting, weights and logs (layout as MaPLe's)",
        "muzairkhattak/multimodal-prompt-learning README, Model Zoo",
        folder_id="14NxzrRirK2GfyfWajsEGDiWa2suJoTBW",
        expected=tuple(f"{{dataset}}/base/{seed}" for seed in SEED_FOLDERS),
        usage="bash scripts/ivlp/reproduce.sh {dataset} 1 {dest}"),
    "coop": Release(
        "CoOp's ImageNet models (RN50, RN101, ViT-B/32, ViT-B/16; M=16 and M=4), one archive, "
        "unpacked as the archive holds it (CoOp's output layout, imagenet/CoOp/<CFG>_16shots/"
        "nctx<M>_cscFalse_ctpend/seed1-3, has not been checked here)",
        "KaiyangZhou/CoOp README, Models and Results",
        file_id="18ypxfd82RR0pizc5MM1ZWDYDk4j0BtPF", per_dataset=False,
        usage="OUTPUT={dest} bash scripts/coop/eval.sh imagenetv2 rn50_ep50"),
}
NOT_PUBLISHED = ("BMIP (LAMDASZ-ML/BMIP's README links no weights) and CoCoOp (KaiyangZhou/CoOp "
                 "publishes CoOp's ImageNet weights only)")


class ReleaseError(Exception):
    """A problem the user can fix; the message says how."""


# ----------------------------------------------------------------------------- files

@dataclass(frozen=True)
class RemoteFile:
    id: str
    path: str                      # relative path inside the release (folder/name.zip)

    @property
    def name(self):
        return Path(self.path).name


def list_folder(folder_id):
    """The files of a public Google Drive folder, recursively (via gdown, which reads Drive's
    folder page; nothing is downloaded here)."""
    import gdown
    try:
        entries = gdown.download_folder(id=folder_id, skip_download=True, quiet=True,
                                        use_cookies=False)
    except Exception as error:  # gdown raises assorted types: network, quota, page format
        raise ReleaseError(
            f"cannot list the Google Drive folder {DRIVE_FOLDER.format(folder_id)} ({error}).\n"
            "Without network access: open that address in a browser, download the zip(s) you "
            "need and run again with --from-archive FILE ... (checked and unpacked the same "
            "way).") from error
    return [RemoteFile(entry.id, entry.path) for entry in entries or ()]


def dataset_of(name):
    """Which of the base-to-new datasets a file or folder name (eurosat.zip, Oxford_Pets)
    stands for; None when none does."""
    key = re.sub(r"[^a-z0-9]", "", Path(name).name.split(".")[0].lower())
    for dataset in BASE2NEW_DATASETS:
        if re.sub(r"[^a-z0-9]", "", dataset) == key:
            return dataset
    return None


def chosen_files(release, files, datasets):
    """The files of the release that DATASETS need (all for a release that is not per dataset)."""
    if not release.per_dataset:
        return list(files)
    chosen = [remote for remote in files if dataset_of(remote.path.split("/")[0]) in datasets
              or dataset_of(remote.name) in datasets]
    missing = set(datasets) - {dataset_of(f.path.split("/")[0]) or dataset_of(f.name) for f in chosen}
    if missing:
        names = ", ".join(sorted(f.path for f in files)) or "nothing"
        raise ReleaseError(f"{release.address} has no file for {', '.join(sorted(missing))} "
                           f"(it holds: {names})")
    return chosen


# ----------------------------------------------------------------------------- manifest

def read_manifest(dest):
    path = Path(dest) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def write_manifest(dest, manifest):
    path = Path(dest) / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def manifest_key(name, file_name):
    """A file's entry in the manifest: <release>/<file> (both MaPLe releases hold imagenet.zip)."""
    return f"{name}/{file_name}"


def expected_digest(release, key, manifest):
    """(digest, where it comes from): the published one, else the one recorded here."""
    if key in release.sha256:
        return release.sha256[key], "published"
    recorded = manifest.get(key)
    return (recorded["sha256"], f"recorded at its first download in {MANIFEST}") if recorded \
        else (None, "")


def record(manifest, name, path, origin):
    from dassl.utils.download import file_digest
    manifest[name] = {"sha256": file_digest(path), "bytes": os.path.getsize(path), "from": origin}


# ----------------------------------------------------------------------------- fetching

def fetch(name, remote, downloads, manifest, download_address=DRIVE_DOWNLOAD):
    """A verified local copy of REMOTE in DOWNLOADS (downloaded, or resumed from its .part)."""
    from dassl.utils.download import DownloadFailed, digest_mismatch, download, folder_lock
    release = RELEASES[name]
    path = downloads / remote.path
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, origin = expected_digest(release, manifest_key(name, remote.path), manifest)
    url = download_address.format(remote.id)
    with folder_lock(path.parent):
        if path.is_file():
            mismatch = digest_mismatch(path, digest)
            if mismatch is None:
                return path
            print(f"{path}: its {mismatch} ({origin}); downloading it again")
            path.unlink()
        try:
            download(url, str(path), digest, "sha256")
        except DownloadFailed as failure:
            raise ReleaseError(failure_message(failure, release, remote, digest, origin)) from failure
    return path


def failure_message(failure, release, remote, digest, origin):
    if failure.kind == "corrupt":
        return (f"{remote.path} from {release.address} arrived whole but its {failure.reason} "
                f"({origin}); it was deleted. If the authors replaced the file, delete its entry "
                f"in {MANIFEST}; otherwise run again.")
    part = Path(failure.path + ".part")
    kept = (f" ({part.stat().st_size} bytes kept in {part}; running again resumes from them)"
            if part.is_file() and part.stat().st_size else "")
    return (f"Could not download {remote.path} from {release.address} ({failure.reason}){kept}.\n"
            f"Without network access: download it in a browser from "
            f"{DRIVE_FILE.format(remote.id)} and run again with --from-archive /path/to/{remote.name}"
            + (f" (its SHA-256 must be {digest})." if digest else "."))


# ----------------------------------------------------------------------------- unpacking

def install(archive, dest, release):
    """Unpack ARCHIVE (a zip; any other file is copied) into DEST so that the release's folders
    sit directly under DEST (<dataset>/base/seed1/..., imagenet/seed1/...)."""
    import zipfile

    from datasets.download import unpack
    archive, dest = Path(archive), Path(dest)
    if not archive.name.endswith(".zip"):
        shutil.copyfile(archive, dest / archive.name)
        return
    if not zipfile.is_zipfile(archive):
        raise ReleaseError(f"{archive} is not a zip archive (Google Drive sends a web page instead "
                           "of the file when its download quota is exceeded): delete it and "
                           f"download it in a browser from {release.address}")
    from dassl.utils import UserError

    staging = dest / ".unpacking" / archive.stem
    shutil.rmtree(staging, ignore_errors=True)
    try:
        unpack(str(archive), str(staging))
    except UserError as error:  # a member that would land outside, a damaged zip
        shutil.rmtree(dest / ".unpacking", ignore_errors=True)
        raise ReleaseError(f"{error} Download it again from {release.address}") from error
    entries = [p for p in staging.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    dataset = dataset_of(archive.name) if release.per_dataset else None
    if dataset:
        # <dataset>.zip holds <dataset>/base/..., or base/... directly.
        single = len(entries) == 1 and entries[0].is_dir() and dataset_of(entries[0].name) == dataset
        merge(entries[0] if single else staging, dest / dataset)
    else:
        for entry in entries:
            merge(entry, dest / entry.name)
    shutil.rmtree(dest / ".unpacking", ignore_errors=True)


def merge(source, target):
    """Move SOURCE (a file or folder) to TARGET, merging into an existing folder (imagenet/ of
    both MaPLe releases: base/ and novel/ from one, seed1-3/ from the other)."""
    if not source.is_dir() or not target.is_dir():
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        return
    for entry in source.iterdir():
        destination = target / entry.name
        if destination.is_dir() and entry.is_dir():
            merge(entry, destination)
        else:
            if destination.exists():
                shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
            shutil.move(str(entry), str(destination))


def check_layout(release, dest, datasets):
    """Every expected seed folder holds a checkpoint (a registered model's model.pth.tar-N or
    model-best.pth.tar); the problems found."""
    from scripts.protocols import model_folders
    problems = []
    for dataset in (datasets if release.per_dataset else [None]):
        for pattern in release.expected:
            folder = Path(dest) / pattern.format(dataset=dataset)
            if not model_folders(folder):
                problems.append(f"{folder} holds no checkpoint")
    return problems


# ----------------------------------------------------------------------------- command

def get(name, dest, datasets=(), archives=(), lister=list_folder,
        download_address=DRIVE_DOWNLOAD):
    """Download (or take from ARCHIVES), verify and unpack release NAME into DEST."""
    release = RELEASES[name]
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ReleaseError(f"--dest {dest} is a file: give a folder (made if missing)")
    dest.mkdir(parents=True, exist_ok=True)
    if archives and not datasets:  # by hand: the datasets are those of the files given
        datasets = [dataset_of(archive) for archive in archives if dataset_of(archive)]
    datasets = list(datasets or BASE2NEW_DATASETS)
    manifest = read_manifest(dest)
    downloads = dest / ".downloads"
    if archives:
        paths = []
        for archive in map(Path, archives):
            if not archive.is_file():
                raise ReleaseError(f"--from-archive {archive}: no such file")
            digest, origin = expected_digest(release, manifest_key(name, archive.name), manifest)
            from dassl.utils.download import digest_mismatch
            mismatch = digest_mismatch(archive, digest)
            if mismatch:
                raise ReleaseError(f"{archive}: its {mismatch} ({origin}); replace it with a good copy")
            paths.append(archive)
        origin = "--from-archive"
    else:
        if release.folder_id:
            files = chosen_files(release, lister(release.folder_id), datasets)
        else:
            files = [RemoteFile(release.file_id, f"{name}.zip")]
        print(f"{release.description}\nfrom {release.address}: {len(files)} file(s)")
        paths = []
        for index, remote in enumerate(files, start=1):
            print(f"[{index}/{len(files)}] {remote.path}")
            paths.append(fetch(name, remote, downloads, manifest, download_address))
        origin = release.address
    for path in paths:
        try:
            install(path, dest, release)
        except ReleaseError:
            if not archives:
                path.unlink()  # a web page, not the file: download it again next time
            raise
        key = manifest_key(name, path.relative_to(downloads) if not archives else path.name)
        if key not in manifest:
            record(manifest, key, path, origin)
    problems = check_layout(release, dest, datasets)
    if problems:
        # Nothing is recorded: a digest taken from a refused file would refuse the right one.
        raise ReleaseError("the weights are not in the expected layout: " + "; ".join(problems))
    write_manifest(dest, manifest)
    shutil.rmtree(downloads, ignore_errors=True)
    return release.usage.format(dataset=datasets[0], dest=dest)


def list_releases():
    lines = []
    for name, release in RELEASES.items():
        lines += [f"{name:<20}{release.description}", f"{'':<20}{release.address} ({release.source})"]
    lines.append(f"Not published: {NOT_PUBLISHED}.")
    return "\n".join(lines)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python -m scripts.released_weights", description=__doc__.split("\n\n")[1],
        epilog="Checksums: none are published; first-download SHA-256s are recorded in "
               f"DEST/{MANIFEST} and checked afterwards.")
    parser.add_argument("release", nargs="?", choices=list(RELEASES), help="which weights")
    parser.add_argument("--dest", help="the folder to put them in (the reproduce scripts' "
                        "WEIGHTS_DIR), e.g. weights/maple")
    parser.add_argument("--datasets", nargs="+", choices=list(BASE2NEW_DATASETS),
                        metavar="DATASET", help="per-dataset releases: which (default: all 11)")
    parser.add_argument("--from-archive", nargs="+", default=[], metavar="FILE",
                        help="files downloaded by hand (offline): checked and unpacked")
    parser.add_argument("--list", action="store_true", help="the known releases and addresses")
    args = parser.parse_args(argv)
    if not args.list and not (args.release and args.dest):
        parser.error("give RELEASE and --dest (or --list)")
    return args


def main(argv=None):
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.list:
        print(list_releases())
        return 0
    try:
        usage = get(args.release, args.dest, args.datasets or (), args.from_archive)
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Done: {RELEASES[args.release].description} in {args.dest} (SHA-256s in "
          f"{Path(args.dest) / MANIFEST}). Evaluate with e.g.\n    {usage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
