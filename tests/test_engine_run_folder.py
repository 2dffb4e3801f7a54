"""A run's folder: one run at a time, durable atomic writes, debris of killed runs removed
(issue 10 §4-6)."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import dassl.utils
import train
from dassl.engine import build_trainer
from dassl.utils import RunFolderBusy, close_logger, load_checkpoint, run_folder_lock, write_json
from dassl.utils import tools
from dassl.utils.run_files import LOCK_FILE
from scripts import protocols
from scripts.protocols import Environment, Job, ProtocolError
from tests.helpers.engine import toy_cfg
from tests.test_engine_cli import TOY_CONFIG

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hold_lock(folder):
    """Another process that holds ``folder``'s lock until killed; returns it once it holds it."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {REPO!r})
        from dassl.utils import run_folder_lock
        with run_folder_lock({str(folder)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait()


def toy_args(tmp_path, seed):
    config = tmp_path / "toy_ep2.yaml"
    config.write_text(TOY_CONFIG)
    (tmp_path / "data").mkdir(exist_ok=True)
    return ["--root", str(tmp_path / "data"), "--seed", str(seed), "--trainer", "EngineToyTrainer",
            "--config-file", str(config), "--output-dir", str(tmp_path / "out"), "DATASET.NAME", "EngineToyColors"]


def run_train(argv):
    try:
        train.main(argv)
    finally:
        close_logger()


def test_a_second_run_on_a_busy_folder_is_refused_and_a_dead_holder_taken_over(tmp_path, capsys):
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_train(toy_args(tmp_path, seed=2))
        message = str(exit_info.value.code)
        assert message.startswith(f'error: output folder "{out}" is in use by another run (process {holder.pid} ')
        assert "--output-dir" in message and "\n" not in message
        assert sorted(os.listdir(out)) == [LOCK_FILE]  # the refused run wrote nothing
    finally:
        kill(holder)

    run_train(toy_args(tmp_path, seed=1))  # the holder died: its lock is taken over
    assert f"taking over the lock of \"{out}\" from process {holder.pid}" in capsys.readouterr().out
    assert (out / "results.json").is_file() and not (out / LOCK_FILE).exists()


def test_the_lock_is_exclusive_within_one_process_and_released_after_an_error(tmp_path):
    with run_folder_lock(tmp_path):
        with pytest.raises(RunFolderBusy, match="is in use by another run"):
            with run_folder_lock(tmp_path):
                pass
    with pytest.raises(ValueError):
        with run_folder_lock(tmp_path):
            raise ValueError("boom")
    with run_folder_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_process_started_by_the_holder_works_under_its_lock_only_with_its_token(tmp_path):
    """The protocol scripts lock a run folder and start train.py on it (perhaps through a
    wrapper such as srun); any other process is refused."""
    code = f"import sys; sys.path.insert(0, {REPO!r})\nfrom dassl.utils import run_folder_lock\n" \
           f"with run_folder_lock({str(tmp_path)!r}): print('inside')"
    with run_folder_lock(tmp_path) as lock_environment:
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={**os.environ, **lock_environment})
        assert child.returncode == 0 and child.stdout == "inside\n", child.stderr
        assert (tmp_path / LOCK_FILE).is_file()  # still ours
        stranger = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert stranger.returncode == 1 and "is in use by another run" in stranger.stderr


def test_protocol_script_refuses_a_busy_folder_before_deleting_anything(tmp_path):
    env = Environment.from_variables({"DATA": str(tmp_path), "OUTPUT": str(tmp_path / "output"), "FORCE": "1"})
    job = Job("maple", "base2new_train", "eurosat", 1)
    out = protocols.run_dir(env.output, job)
    (out / "MultiModalPromptLearner").mkdir(parents=True)
    (out / "MultiModalPromptLearner" / "model.pth.tar-5").write_bytes(b"checkpoint of the live run")
    holder = hold_lock(out)
    try:
        with pytest.raises(ProtocolError, match="is in use by another run"):
            protocols.run_job(job, env)
    finally:
        kill(holder)
    assert (out / "MultiModalPromptLearner" / "model.pth.tar-5").is_file()


def test_atomic_writes_are_durable(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor):
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}") if os.path.exists("/proc/self/fd") else descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(tools.os, "fsync", fsync)
    write_json({"accuracy": 1.0}, str(tmp_path / "results.json"))
    assert len(synced) == 2  # the data before the rename, the folder after it
    if os.path.exists("/proc/self/fd"):
        assert os.path.basename(synced[0]).startswith(".tmp-") and synced[1] == str(tmp_path)


def test_config_yaml_is_written_atomically(tmp_path, monkeypatch):
    """A run killed while writing config.yaml leaves the previous one whole."""
    args = toy_args(tmp_path, seed=1)
    run_train(args)
    config = tmp_path / "out" / "config.yaml"
    before = config.read_text()

    real_atomic_write = dassl.utils.atomic_write

    def interrupted_atomic_write(path):
        with real_atomic_write(path) as f:
            f.write(before[:50])
            raise KeyboardInterrupt

    monkeypatch.setattr(dassl.utils, "atomic_write", interrupted_atomic_write)  # what train.py uses
    with pytest.raises(KeyboardInterrupt):
        run_train(args[:-2] + ["DATASET.NAME", "EngineToyColors"])
    kept = [name for name in os.listdir(tmp_path / "out") if name.startswith("config.yaml")]
    assert all((tmp_path / "out" / name).read_text() == before for name in kept)
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".tmp-")]


def test_a_truncated_config_yaml_refuses_the_resume_in_one_line(tmp_path):
    args = toy_args(tmp_path, seed=1)
    run_train(args + ["TEST.NO_TEST", "True"])
    (tmp_path / "out" / "config.yaml").write_text("OPTIM:\n  NAME: 'sg")
    with pytest.raises(SystemExit) as exit_info:
        run_train(args + ["TEST.NO_TEST", "True"])
    assert "config.yaml\" is not valid YAML" in str(exit_info.value.code)


def test_debris_of_killed_runs_is_removed_on_the_next_start(tmp_path, capsys):
    """Orphan temporary files, and a rolling checkpoint left between saving the next epoch
    (pointer updated) and removing it."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    cfg = toy_cfg(data, out, **{"OPTIM.MAX_EPOCH": 3})
    trainer = build_trainer(cfg)
    trainer.max_epoch = 2  # stop after epoch 2, as a kill would; both saves are rolling ones
    trainer.save_epoch_checkpoint = lambda: trainer.save_model(trainer.epoch, trainer.output_dir, rolling=True)
    trainer.train()
    model_dir = out / "model"
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith("model.pth")) == [
        "model.pth.tar-1", "model.pth.tar-2"]  # epoch 1 was never removed: the kill's leftover
    (model_dir / ".tmp-0123456789abcdef-model.pth.tar-3").write_bytes(b"half a checkpoint")
    (out / ".tmp-0123456789abcdef-results.json").write_text("{")

    args = ["--root", str(data), "--seed", "1", "--trainer", "EngineToyTrainer", "--output-dir", str(out),
            "DATASET.NAME", "EngineToyColors", "OPTIM.MAX_EPOCH", "3", "INPUT.SIZE", "(8, 8)",
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.NAME", "sgd",
            "USE_CUDA", "False", "TEST.NO_TEST", "True"]
    run_train(args)
    printed = capsys.readouterr().out
    assert "left by a write that was interrupted" in printed and "a rolling checkpoint left" in printed
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == ["checkpoint", "model.pth.tar-3"]
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]
    assert load_checkpoint(str(model_dir / "model.pth.tar-3"))["epoch"] == 3
