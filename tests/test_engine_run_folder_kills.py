"""One run per folder under kills (issue 20 §5-7, 9): the process that trains holds its folder's
lock itself, forked DataLoader workers do not keep it, --subset-output folders are locked too,
and neither a full disk nor a killed write leaves debris (an empty lock, temporary files in a
dataset folder)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dassl.data.datasets import build_dataset
from dassl.utils import RunFolderBusy, run_folder_lock, run_lock
from dassl.utils.run_files import LOCK_FILE
from scripts import protocols
from scripts.protocols import Environment, Job, ProtocolError
from tests.helpers.datasets import dataset_cfg, make_eurosat
from tests.test_engine_run_folder import REPO, hold_lock, kill, run_train, toy_args


def python(code, **kwargs):
    return subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {REPO!r})\n"
                             + textwrap.dedent(code)], stdout=subprocess.PIPE, text=True, **kwargs)


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# A train.py stand-in: locks its --output-dir as train.py does, says so, and works on.
FAKE_TRAIN = textwrap.dedent(f"""
    import os, sys, time
    sys.path.insert(0, {REPO!r})
    from dassl.utils import run_folder_lock
    with run_folder_lock(sys.argv[sys.argv.index("--output-dir") + 1]):
        print("training", os.getpid(), flush=True)
        time.sleep(120)
""")


def test_killing_the_protocol_script_leaves_its_train_py_holding_the_lock(tmp_path):
    """kill -9 of scripts.protocols: the train.py it started still trains, so a second start on
    the folder is refused, naming that train.py, until it ends."""
    (tmp_path / "data").mkdir()
    parent = python(f"""
        from scripts import protocols
        from scripts.protocols import Environment, Job
        env = Environment.from_variables({{"DATA": {str(tmp_path / "data")!r},
                                          "OUTPUT": {str(tmp_path / "output")!r}}})
        protocols.train_command = lambda job, env, output=None, **_: [
            sys.executable, "-c", {FAKE_TRAIN!r}, "--output-dir", str(output)]
        protocols.run_job(Job("maple", "base2new_train", "eurosat", 1), env)
    """)
    child = None
    try:
        assert parent.stdout.readline().startswith("starting: ")
        line = parent.stdout.readline().split()
        assert line[0] == "training", line
        child = int(line[1])
        kill(parent)
        env = Environment.from_variables({"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "output")})
        job = Job("maple", "base2new_train", "eurosat", 1)
        with pytest.raises(ProtocolError, match=f"is in use by another run \\(process {child} "):
            protocols.run_job(job, env)
        out = protocols.run_dir(env.output, job)
        with pytest.raises(RunFolderBusy, match=f"process {child} "):
            with run_folder_lock(out):
                pass
    finally:
        kill(parent)
        if child is not None:
            kill_pid(child)
    time.sleep(0.2)
    with run_folder_lock(out):  # the train.py has ended: the lock is free at once
        pass
    assert not (out / LOCK_FILE).exists()


def test_forked_dataloader_workers_do_not_keep_the_lock(tmp_path, monkeypatch):
    """A run killed with its DataLoader workers still up: a restart at once takes the lock
    over (before, the workers held it until they noticed, seconds later)."""
    monkeypatch.setattr(run_lock, "ENDED_HOLDER_WAIT", 0.0, raising=False)  # no waiting for them
    holder = python(f"""
        import os, time, torch
        from dassl.utils import run_folder_lock
        with run_folder_lock({str(tmp_path)!r}):
            loader = torch.utils.data.DataLoader(range(8), num_workers=2, persistent_workers=True)
            batches = iter(loader)
            next(batches)
            print(*[worker.pid for worker in batches._workers], flush=True)
            time.sleep(120)
    """)
    workers = []
    try:
        workers = [int(pid) for pid in holder.stdout.readline().split()]
        assert len(workers) == 2
        kill(holder)
        assert all(os.path.exists(f"/proc/{pid}") for pid in workers)  # the workers live on
        with run_folder_lock(tmp_path):
            pass
    finally:
        kill(holder)
        for pid in workers:
            kill_pid(pid)


def test_subset_output_into_a_folder_another_run_holds_is_refused(tmp_path):
    """train.py --subset-output writes results.json and log.txt into another run's folder: it
    locks that folder too, and is refused before writing anything anywhere."""
    busy = tmp_path / "busy"
    holder = hold_lock(busy)
    try:
        with pytest.raises(SystemExit) as exit_info:
            args = toy_args(tmp_path, seed=1)  # options first, then the config overrides
            run_train(args[:-2] + ["--eval-only", "--subset-output", "base", str(busy)] + args[-2:])
        message = str(exit_info.value.code)
        assert message.startswith(f'error: output folder "{busy}" is in use by another run (process {holder.pid} ')
    finally:
        kill(holder)
    assert sorted(os.listdir(busy)) == [LOCK_FILE]
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_full_disk_leaves_no_empty_lock_file(tmp_path):
    """The lock file is created, then recording its holder fails (here: file-size limit 0, as
    on a full disk): one line, and no lock file left behind."""
    process = python(f"""
        import resource, signal
        from dassl.utils import UserError, run_folder_lock
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        try:
            with run_folder_lock({str(tmp_path)!r}):
                pass
        except UserError as error:
            sys.exit(f"error: {{error}}")
    """, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr.startswith(f'error: cannot write "{tmp_path}": File too large;') and stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_temporary_files_of_killed_writes_in_a_dataset_folder_are_removed(tmp_path):
    """Split files and few-shot caches are written by runs that share the dataset folder
    without a lock: a temporary file no live write holds, a minute old, is removed when the
    dataset is next read; a write in progress keeps its own."""
    make_eurosat(tmp_path, n_classes=2)
    dataset_dir = tmp_path / "eurosat"
    (dataset_dir / "split_fewshot").mkdir()
    old = time.time() - 120
    left = [dataset_dir / ".tmp-0123456789abcdef-split_zhou_EuroSAT.json",
            dataset_dir / "split_fewshot" / ".tmp-0123456789abcdef-shot_2-seed_1.json"]
    live = dataset_dir / "split_fewshot" / ".tmp-fedcba9876543210-shot_2-seed_2.json"
    fresh = dataset_dir / ".tmp-00112233445566aa-split_zhou_EuroSAT.json"
    for path in left + [live, fresh]:
        path.write_text("{")
    for path in left + [live]:
        os.utime(path, (old, old))
    writer = python(f"""
        import fcntl, os, time
        descriptor = os.open({str(live)!r}, os.O_WRONLY)
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # what atomic_write holds while it writes
        print("writing", flush=True)
        time.sleep(120)
    """)
    try:
        assert writer.stdout.readline() == "writing\n"
        build_dataset(dataset_cfg(tmp_path, "EuroSAT", num_shots=2, seed=1))
    finally:
        kill(writer)
    assert [path.exists() for path in left] == [False, False]
    assert live.exists() and fresh.exists()


def test_a_skipped_finished_run_loses_the_lock_file_a_killed_holder_left(tmp_path):
    """A protocol script killed after its train.py had finished leaves the lock file of a
    finished run: the next start, which skips it, removes it (not one a live process holds)."""
    from tests.helpers.protocols import write_results

    env = Environment.from_variables({"DATA": str(tmp_path), "OUTPUT": str(tmp_path / "output")})
    job = Job("maple", "base2new_train", "eurosat", 1)
    out = write_results(protocols.run_dir(env.output, job), 80.0)
    holder = hold_lock(out)
    kill(holder)
    assert (out / LOCK_FILE).is_file()
    protocols.run_job(job, env)
    assert not (out / LOCK_FILE).exists()
    holder = hold_lock(out)
    try:
        protocols.run_job(job, env)
        assert (out / LOCK_FILE).is_file()
    finally:
        kill(holder)


def test_a_lock_file_that_is_a_symbolic_link_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    env = Environment.from_variables({"DATA": str(tmp_path), "OUTPUT": str(tmp_path / "output")})
    job = Job("maple", "base2new_train", "eurosat", 1)
    out = protocols.run_dir(env.output, job)
    out.mkdir(parents=True)
    (out / LOCK_FILE).symlink_to(victim)
    with pytest.raises(ProtocolError, match=f'"{out / LOCK_FILE}" is a symbolic link, not a lock file'):
        protocols.run_job(job, env)
    with pytest.raises(SystemExit) as exit_info:
        run_train(toy_args(tmp_path, seed=1)[:-4] + ["--output-dir", str(out), "DATASET.NAME", "EngineToyColors"])
    assert "is a symbolic link, not a lock file" in str(exit_info.value.code)
    assert victim.read_text() == "precious"
