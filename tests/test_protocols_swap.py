"""FORCE=1's swap of a finished staging run for the run folder, killed at each step (issue 20
§8): the next start completes it (a finished run is not trained again) or rolls it back, and
leaves neither seed<S>.staging nor seed<S>.replaced behind; a run folder that is a symbolic
link is swapped where it points."""
import os
import subprocess
import sys

import pytest

from dassl.utils.run_files import LOCK_FILE
from scripts import protocols
from scripts.protocols import Environment, Job
from tests.helpers.protocols import write_results
from tests.test_engine_run_folder import REPO, hold_lock

JOB = Job("maple", "base2new_train", "eurosat", 1)


@pytest.fixture
def env(tmp_path):
    (tmp_path / "data").mkdir()
    return Environment.from_variables({"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "output"),
                                       "FORCE": "1"})


def fake_train(accuracy):
    """A subprocess.run standing in for train.py: a finished run with ACCURACY in --output-dir."""
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        write_results(command[command.index("--output-dir") + 1], accuracy)
        return subprocess.CompletedProcess(command, 0)

    return run, calls


def siblings(out):
    return sorted(path.name for path in out.parent.iterdir())


# The protocol script, killed (os._exit, as by kill -9: locks dropped, files left) at KILL_AT:
# "swap" once train.py has finished, before the swap; "rename 2" between the two renames;
# "remove" after them, while removing the replaced run.
KILLED_FORCE_RUN = """
import os, sys, pathlib, subprocess
sys.path.insert(0, {repo!r})
from scripts import protocols
from scripts.protocols import Environment, Job
from tests.helpers.protocols import write_results

def train(command, **kwargs):
    write_results(command[command.index("--output-dir") + 1], 90.0)
    return subprocess.CompletedProcess(command, 0)

protocols.subprocess.run = train
kill_at = {kill_at!r}
if kill_at == "swap":
    protocols.replace_run = lambda *args: os._exit(9)
renames = []
real_rename = pathlib.Path.rename
def rename(self, target):
    renames.append(self)
    if kill_at == "rename 2" and len(renames) == 2:
        os._exit(9)
    return real_rename(self, target)
pathlib.Path.rename = rename
if kill_at == "remove":
    protocols.shutil.rmtree = lambda path, *args, **kwargs: os._exit(9)
env = Environment.from_variables({{"DATA": {data!r}, "OUTPUT": {output!r}, "FORCE": "1"}})
protocols.run_job(Job("maple", "base2new_train", "eurosat", 1), env)
"""


@pytest.mark.parametrize("kill_at", ["swap", "rename 2", "remove"])
def test_a_swap_killed_at_any_step_is_completed_by_the_next_start(env, monkeypatch, kill_at):
    out = write_results(protocols.run_dir(env.output, JOB), 80.0)
    code = KILLED_FORCE_RUN.format(repo=REPO, kill_at=kill_at, data=str(env.data), output=str(env.output))
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    left = {"swap": ["seed1", "seed1.staging"], "rename 2": ["seed1.replaced", "seed1.staging"],
            "remove": ["seed1", "seed1.replaced"]}[kill_at]
    assert siblings(out) == left

    run, calls = fake_train(95.0)
    monkeypatch.setattr(protocols.subprocess, "run", run)
    assert protocols.run_job(JOB, env) == 0  # FORCE=1 again: its run had finished
    assert calls == []  # not trained again
    assert protocols.read_run_metrics(out)["accuracy"] == 90.0
    assert siblings(out) == ["seed1"] and not (out / LOCK_FILE).exists()


def test_a_swap_killed_between_its_renames_without_a_finished_run_is_rolled_back(env, monkeypatch):
    """A run folder moved aside with an unfinished staging folder (no finished run to swap in):
    the previous run is put back."""
    out = protocols.run_dir(env.output, JOB)
    write_results(out.with_name("seed1.replaced"), 80.0)
    (out.with_name("seed1.staging") / "log.txt").parent.mkdir(parents=True)
    (out.with_name("seed1.staging") / "log.txt").write_text("epoch [1/5]\n")
    unforced = Environment(env.data, env.output, {**env.variables, "FORCE": "0"})
    run, calls = fake_train(95.0)
    monkeypatch.setattr(protocols.subprocess, "run", run)
    assert protocols.run_job(JOB, unforced) == 0
    assert calls == [] and protocols.read_run_metrics(out)["accuracy"] == 80.0
    assert siblings(out) == ["seed1", "seed1.staging"]  # the failed attempt, until the next FORCE=1


def test_a_finished_staging_run_is_swapped_in_even_when_the_next_start_would_skip(env, monkeypatch):
    out = write_results(protocols.run_dir(env.output, JOB), 80.0)
    write_results(out.with_name("seed1.staging"), 90.0)
    unforced = Environment(env.data, env.output, {**env.variables, "FORCE": "0"})
    run, calls = fake_train(95.0)
    monkeypatch.setattr(protocols.subprocess, "run", run)
    assert protocols.run_job(JOB, unforced) == 0
    assert calls == [] and protocols.read_run_metrics(out)["accuracy"] == 90.0
    assert siblings(out) == ["seed1"]


def test_force_on_a_symlinked_run_folder_swaps_where_it_points(env, monkeypatch):
    out = protocols.run_dir(env.output, JOB)
    elsewhere = write_results(env.output.parent / "elsewhere" / "seed1", 80.0)
    out.parent.mkdir(parents=True)
    out.symlink_to(elsewhere, target_is_directory=True)
    run, calls = fake_train(90.0)
    monkeypatch.setattr(protocols.subprocess, "run", run)
    assert protocols.run_job(JOB, env) == 0
    [command] = calls
    assert command[command.index("--output-dir") + 1] == str(elsewhere) + ".staging"
    assert out.is_symlink() and os.readlink(out) == str(elsewhere)
    assert protocols.read_run_metrics(elsewhere)["accuracy"] == 90.0
    assert siblings(out) == ["seed1"] and siblings(elsewhere) == ["seed1"]


def test_force_removes_the_replaced_link_an_earlier_swap_left(env, monkeypatch):
    """What the swap of a symlinked run folder used to leave: the new run in a folder of its
    own, and seed1.replaced a link to the previous run's folder."""
    out = write_results(protocols.run_dir(env.output, JOB), 85.0)
    elsewhere = write_results(env.output.parent / "elsewhere" / "seed1", 80.0)
    out.with_name("seed1.replaced").symlink_to(elsewhere, target_is_directory=True)
    run, calls = fake_train(90.0)
    monkeypatch.setattr(protocols.subprocess, "run", run)
    assert protocols.run_job(JOB, env) == 0  # that FORCE=1 run had finished: only tidied up
    assert calls == [] and siblings(out) == ["seed1"]
    assert protocols.read_run_metrics(elsewhere)["accuracy"] == 80.0  # a link's target is kept
    assert protocols.run_job(JOB, env) == 0  # FORCE=1 works again
    assert len(calls) == 1 and protocols.read_run_metrics(out)["accuracy"] == 90.0
    assert siblings(out) == ["seed1"]


def test_a_staging_folder_where_a_train_py_still_runs_is_left_alone(env, monkeypatch):
    """Its protocol script was killed, its train.py trains on: the next start is refused."""
    out = write_results(protocols.run_dir(env.output, JOB), 80.0)
    staging = out.with_name("seed1.staging")
    holder = hold_lock(staging)
    try:
        (staging / "model.pth.tar-3").write_text("being trained")
        run, calls = fake_train(95.0)
        monkeypatch.setattr(protocols.subprocess, "run", run)
        with pytest.raises(protocols.ProtocolError, match=f"seed1.staging\" is in use by another run \\(process {holder.pid} "):
            protocols.run_job(JOB, env)
        assert calls == [] and (staging / "model.pth.tar-3").is_file()
    finally:
        holder.kill()
        holder.wait()
