"""Disk-side write failures end a run with one line naming the file and the cause, and leave the
earlier checkpoints as they were (issue 10 §7)."""
import errno
import os
import subprocess
import sys
import textwrap

import pytest

from dassl.utils import load_checkpoint
from tests.test_engine_run_folder import REPO, run_train, toy_args


def user_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        run_train(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def fd_path(descriptor):
    return os.readlink(f"/proc/self/fd/{descriptor}")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name the file being synced")
def test_a_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(descriptor):
        if fd_path(descriptor).endswith("-model.pth.tar-2"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    message = user_error(toy_args(tmp_path, seed=1))
    model_dir = tmp_path / "out" / "model"
    assert message == (f'error: cannot write "{model_dir / "model.pth.tar-2"}": No space left on device; '
                       "the disk is full: free space, then run the same command again")
    assert sorted(os.listdir(model_dir)) == ["checkpoint", "model.pth.tar-1"]  # untouched, no debris
    assert load_checkpoint(str(model_dir / "model.pth.tar-1"))["epoch"] == 1


def test_a_folder_where_results_json_should_be(tmp_path):
    (tmp_path / "out" / "results.json").mkdir(parents=True)
    message = user_error(toy_args(tmp_path, seed=1))
    assert message == (f'error: cannot write "{tmp_path / "out" / "results.json"}": Is a directory; '
                       "a folder stands where the file should be: move it away")
    assert load_checkpoint(str(tmp_path / "out" / "model" / "model.pth.tar-2"))["epoch"] == 2


def test_a_read_only_output_folder(tmp_path, monkeypatch):
    """Simulated: the tests may run as root, whom permissions do not stop."""
    out = tmp_path / "out"
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    message = user_error(toy_args(tmp_path, seed=1))
    assert message == (f'error: cannot write "{out}": Read-only file system; the file system is read-only: '
                       "choose a writable folder")


def test_a_file_too_large_for_the_size_limit(tmp_path):
    """RLIMIT_FSIZE (ulimit -f) in a child process: writing past it fails with EFBIG."""
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {REPO!r})
        import torch
        from dassl.utils import UserError, save_checkpoint
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        state = {{"state_dict": {{"w": torch.zeros(100_000)}}, "epoch": 3}}
        try:
            save_checkpoint(state, {str(tmp_path / "model")!r})
        except UserError as error:
            sys.exit(f"error: {{error}}")
    """)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 1
    path = tmp_path / "model" / "model.pth.tar-3"
    assert child.stderr == (f'error: cannot write "{path}": File too large; the file would exceed the largest '
                            "size allowed here (file system, or ulimit -f)\n")
    assert os.listdir(tmp_path / "model") == []


def test_max_epoch_zero_says_so(tmp_path):
    message = user_error(toy_args(tmp_path, seed=1) + ["OPTIM.MAX_EPOCH", "0"])
    assert message == ("error: OPTIM.MAX_EPOCH is 0: training needs at least one epoch (to evaluate a model "
                       "without training, use --eval-only)")


def test_results_json_records_the_shots_the_sample_holds(tmp_path):
    """The dataset says how many shots its sample holds (fewer than DATASET.NUM_SHOTS when its
    classes have fewer images); results.json records that, and the number asked for."""
    from dassl.engine import build_trainer
    from dassl.utils import read_json
    from tests.helpers.engine import toy_cfg

    (tmp_path / "data").mkdir()
    trainer = build_trainer(toy_cfg(tmp_path / "data", tmp_path / "out", **{"DATASET.NUM_SHOTS": 1000}))
    trainer.dm.dataset.num_shots_used = 4
    trainer.test()
    record = read_json(str(tmp_path / "out" / "results.json"))
    assert (record["num_shots"], record["num_shots_requested"]) == (4, 1000)
