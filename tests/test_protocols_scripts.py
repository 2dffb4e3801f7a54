"""scripts/protocols.py and scripts/sweep.py without running train.py: layout, commands, sweeps.

Expected folders are spelled out literally from SPEC.md §3 (MaPLe's layout), not built with
run_dir, so a change of layout fails here.
"""
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from scripts import protocols, sweep
from scripts.protocols import Environment, Job, ProtocolError
from tests.helpers.protocols import write_results, write_training_log

REPO = Path(__file__).resolve().parent.parent
WRAPPER_STEPS = ("base2new_train", "base2new_test", "openworld_test", "xd_train", "xd_test",
                 "reproduce", "reproduce_xd")


@pytest.fixture
def env(tmp_path):
    (tmp_path / "data").mkdir()
    return Environment.from_variables({"DATA": str(tmp_path / "data"),
                                       "OUTPUT": str(tmp_path / "output")})


def test_dataset_lists_match_the_paper():
    assert len(protocols.BASE2NEW_DATASETS) == 11 and len(protocols.XD_TARGETS) == 10
    assert "imagenet" not in protocols.XD_TARGETS
    assert protocols.DG_TARGETS == ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
    for name in protocols.BASE2NEW_DATASETS + protocols.DG_TARGETS:
        assert (REPO / "configs" / "datasets" / f"{name}.yaml").is_file(), name


@pytest.mark.parametrize("job, expected", [
    (Job("bmip", "base2new_train", "eurosat", 1),
     "base2new/train_base/eurosat/shots_16/BMIP/BMIP_ctx2_dp9_lr2/seed1"),
    (Job("maple", "base2new_test", "dtd", 2),
     "base2new/test_new/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2"),
    (Job("maple", "base2new_test_base", "dtd", 2),
     "base2new/test_base/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2"),
    (Job("bmip", "openworld_test", "eurosat", 3),
     "openworld/test_all/eurosat/shots_16/BMIP/BMIP_ctx2_dp9_lr2/seed3"),
    (Job("maple", "xd_train", "imagenet", 1),
     "imagenet/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/seed1"),
    (Job("maple", "xd_test", "caltech101", 1),
     "evaluation/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/caltech101/seed1"),
    (Job("cocoop", "xd_test", "imagenet_r", 2),
     "evaluation/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1_16shots/imagenet_r/seed2"),
    (Job("zsclip", "base2new_train", "eurosat", 1),
     "base2new/train_base/eurosat/shots_16/ZeroshotCLIP/vit_b16_ep50/seed1"),
    # Released weights (reproduce.sh) get a config folder of their own.
    (Job("maple", "base2new_test", "dtd", 2, model_dir="weights"),
     "base2new/test_new/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx_released/seed2"),
    (Job("maple", "xd_test", "dtd", 1, model_dir="weights"),
     "evaluation/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_released_16shots/dtd/seed1"),
])
def test_layout_and_its_inverse(job, expected, tmp_path):
    folder = protocols.run_dir(tmp_path / "output", job)
    assert folder == tmp_path / "output" / expected
    key = protocols.parse_run_dir(folder)
    config = job.resolved_config + ("_released" if job.model_dir else "")
    assert (key.step, key.dataset, key.trainer, key.config, key.seed, key.shots) == (
        job.step, job.dataset, job.spec.name, config, job.seed, 16)
    assert key.protocol == job.protocol


def test_protocol_of_domain_generalisation_targets():
    assert Job("bmip", "xd_test", "imagenetv2", 1).protocol == "dg"
    assert Job("bmip", "xd_test", "eurosat", 1).protocol == "xd"
    assert protocols.parse_run_dir("/x/output/base2new/train_base/eurosat/MaPLe/seed1") is None


def test_data_must_be_set_and_exist(tmp_path):
    with pytest.raises(ProtocolError, match="DATA is not set"):
        Environment.from_variables({})
    with pytest.raises(ProtocolError, match=f"DATA={tmp_path / 'nope'} is not a folder"):
        Environment.from_variables({"DATA": str(tmp_path / "nope")})


def test_train_command(env):
    job = Job("maple", "base2new_train", "eurosat", 1, overrides=("OPTIM.MAX_EPOCH", "2"))
    command = protocols.train_command(job, env)
    assert command[:2] == [sys.executable, str(REPO / "train.py")]
    arguments = dict(zip(command[2:14:2], command[3:14:2]))
    assert arguments == {
        "--root": str(env.data), "--seed": "1", "--trainer": "MaPLe",
        "--dataset-config-file": str(REPO / "configs/datasets/eurosat.yaml"),
        "--config-file": str(REPO / "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
        # An override that changes training: a config folder of its own.
        "--output-dir": str(env.output / "base2new/train_base/eurosat/shots_16/MaPLe/"
                                         "vit_b16_c2_ep5_batch4_2ctx_max_epoch-2/seed1")}
    assert command[14:] == ["RUN.PROTOCOL", "base2new", "RUN.STEP", "base2new_train",
                            "RUN.SOURCE", "", "RUN.TAG", "", "DATASET.NUM_SHOTS", "16",
                            "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "2"]
    assert "--eval-only" not in command
    resumed = protocols.train_command(job, env, resume=True)
    assert resumed[14:16] == ["--resume", arguments["--output-dir"]]


def _saved_model(folder, *names):
    for name in names:
        (folder / "MultiModalPromptLearner").mkdir(parents=True, exist_ok=True)
        (folder / "MultiModalPromptLearner" / name).write_bytes(b"")
    return folder


def test_test_command_loads_the_last_epoch_of_the_training_run(env):
    job = Job("maple", "base2new_test", "eurosat", 1)
    train_dir = protocols.run_dir(env.output, job.model_job())
    _saved_model(train_dir, "model.pth.tar-5")
    command = protocols.train_command(job, env)
    assert command[command.index("--model-dir") + 1] == str(train_dir)
    assert command[command.index("--load-epoch") + 1] == "5"  # MaPLe's OPTIM.MAX_EPOCH
    assert "--eval-only" in command
    assert command[-12:] == ["RUN.PROTOCOL", "base2new", "RUN.STEP", "base2new_test",
                             "RUN.SOURCE", "", "RUN.TAG", "", "DATASET.NUM_SHOTS", "16",
                             "DATASET.SUBSAMPLE_CLASSES", "new"]
    openworld = protocols.train_command(Job("maple", "openworld_test", "eurosat", 1), env)
    assert openworld[-12:] == ["RUN.PROTOCOL", "openworld", "RUN.STEP", "openworld_test",
                               "RUN.SOURCE", "", "RUN.TAG", "", "DATASET.NUM_SHOTS", "16",
                               "DATASET.SUBSAMPLE_CLASSES", "all"]


def test_load_epoch_follows_overrides_environment_and_best_val(env, tmp_path):
    config = protocols.TRAINERS["maple"].config_dir / "vit_b16_c2_ep5_batch4_2ctx.yaml"
    model = _saved_model(tmp_path / "model", "model.pth.tar-2", "model.pth.tar-5")
    assert protocols.choose_load_epoch(model, config, (), {}) == 5
    assert protocols.choose_load_epoch(model, config, ("OPTIM.MAX_EPOCH", "2"), {}) == 2
    assert protocols.choose_load_epoch(model, config, (), {"LOAD_EPOCH": "2"}) == 2
    # Stopped early: the latest saved epoch, said aloud.
    assert protocols.choose_load_epoch(model, config, ("OPTIM.MAX_EPOCH", "9"), {}) == 5
    # What the model was trained with (train.py's config.yaml) beats the config file.
    (model / "config.yaml").write_text("OPTIM:\n  MAX_EPOCH: 2\nTEST:\n  FINAL_MODEL: last_step\n")
    assert protocols.choose_load_epoch(model, config, (), {}) == 2
    with pytest.raises(ProtocolError, match="model-best"):
        protocols.choose_load_epoch(model, config, ("TEST.FINAL_MODEL", "best_val"), {})
    _saved_model(model, "model-best.pth.tar")
    assert protocols.choose_load_epoch(model, config, ("TEST.FINAL_MODEL", "best_val"), {}) is None
    with pytest.raises(ProtocolError, match="no checkpoint"):
        protocols.choose_load_epoch(tmp_path, config, (), {})
    with pytest.raises(ProtocolError, match=r"LOAD_EPOCH=3: .* epochs saved: 2, 5$"):
        protocols.choose_load_epoch(model, config, (), {"LOAD_EPOCH": "3"})


def test_xd_test_command_uses_the_imagenet_model_and_dg_protocol(env):
    job = Job("maple", "xd_test", "imagenet_a", 2)
    source_dir = env.output / "imagenet/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/seed2"
    _saved_model(source_dir, "model.pth.tar-2")
    command = protocols.train_command(job, env)
    assert command[command.index("--model-dir") + 1] == str(source_dir)
    assert command[command.index("--load-epoch") + 1] == "2"
    assert command[command.index("RUN.PROTOCOL") + 1] == "dg"


@pytest.mark.skipif(not (REPO / "configs/trainers/CoOp/vit_b16_ep50.yaml").is_file(),
                    reason="CoOp config not written yet")
def test_zero_shot_clip_only_evaluates(env):
    for step in ("base2new_train", "base2new_test", "xd_train", "xd_test"):
        command = protocols.train_command(Job("zsclip", step, "eurosat", 1), env)
        assert "--eval-only" in command and "--model-dir" not in command
        assert command[command.index("--config-file") + 1] == str(
            REPO / "configs/trainers/CoOp/vit_b16_ep50.yaml")


def test_script_arguments():
    parse = protocols.jobs_from_arguments
    [job] = parse("bmip", "base2new_train", ["eurosat", "1", "OPTIM.MAX_EPOCH", "2"], {})
    assert (job.dataset, job.seed, job.overrides) == ("eurosat", 1, ("OPTIM.MAX_EPOCH", "2"))
    [job] = parse("bmip", "xd_train", ["3"], {})
    assert (job.dataset, job.seed) == ("imagenet", 3)
    [job] = parse("bmip", "xd_train", ["eurosat", "3"], {})
    assert (job.dataset, job.seed) == ("eurosat", 3)
    [job] = parse("bmip", "xd_test", ["dtd", "1"], {"SOURCE": "eurosat", "CFG": "mine"})
    assert (job.source, job.resolved_config, job.model_job().dataset) == ("eurosat", "mine", "eurosat")
    with pytest.raises(ProtocolError, match="KEY VALUE pairs"):
        parse("bmip", "base2new_train", ["eurosat", "1", "OPTIM.MAX_EPOCH"], {})
    with pytest.raises(ProtocolError, match="SEED must be a number"):
        parse("bmip", "base2new_train", ["eurosat"], {})
    with pytest.raises(ProtocolError, match="unknown trainer"):
        parse("nope", "base2new_train", ["eurosat", "1"], {})
    with pytest.raises(ProtocolError, match="CFG=mine_released: .*reproduce.sh"):
        parse("bmip", "base2new_train", ["eurosat", "1"], {"CFG": "mine_released"})


def test_reproduce_reads_the_maple_release_layout(tmp_path):
    weights = tmp_path / "weights"
    (weights / "imagenet" / "base" / "seed2").mkdir(parents=True)
    jobs = protocols.jobs_from_arguments("maple", "reproduce", ["imagenet", "2", str(weights)], {})
    assert [job.step for job in jobs] == ["base2new_test_base", "base2new_test", "openworld_test"]
    assert {job.model_dir for job in jobs} == {str(weights / "imagenet" / "base" / "seed2")}
    # Into folders of their own, never those of a MaPLe trained here with the same config.
    released = "imagenet/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx_released/seed2"
    assert [protocols.run_dir(tmp_path / "output", job) for job in jobs] == [
        tmp_path / "output" / part / released
        for part in ("base2new/test_base", "base2new/test_new", "openworld/test_all")]
    (weights / "imagenet" / "seed1").mkdir(parents=True)
    [xd] = protocols.jobs_from_arguments("maple", "reproduce_xd", ["dtd", "1", str(weights)], {})
    assert protocols.run_dir(tmp_path / "output", xd) == tmp_path / "output" / (
        "evaluation/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_released_16shots/dtd/seed1")
    # The dataset folder itself may be given, as in the MaPLe instructions.
    jobs = protocols.jobs_from_arguments("maple", "reproduce",
                                         ["imagenet", "2", str(weights / "imagenet")], {})
    assert jobs[0].model_dir == str(weights / "imagenet" / "base" / "seed2")
    with pytest.raises(ProtocolError, match="released weights not found"):
        protocols.jobs_from_arguments("maple", "reproduce", ["imagenet", "1", str(weights)], {})


def test_evaluation_before_training_says_what_to_run(env):
    with pytest.raises(ProtocolError, match=r"run `bash .*scripts/bmip/base2new_train.sh eurosat 1` first"):
        protocols.run_job(Job("bmip", "base2new_test", "eurosat", 1), env)


def test_finished_runs_are_skipped(env, capsys):
    job = Job("bmip", "base2new_train", "eurosat", 1)
    write_results(protocols.run_dir(env.output, job), 80.0)
    assert protocols.run_job(job, env) == 0
    assert "already finished" in capsys.readouterr().out


def test_finished_means_a_result(tmp_path):
    assert not protocols.is_finished(write_training_log(tmp_path / "a", 1.0, (50.0,), finished=False))
    assert protocols.is_finished(write_training_log(tmp_path / "b", 1.0, (50.0,)))


def test_every_wrapper_calls_the_shared_implementation():
    for trainer in protocols.TRAINERS:
        for step in WRAPPER_STEPS:
            path = REPO / "scripts" / trainer / f"{step}.sh"
            if trainer == "zsclip" and step.startswith("reproduce"):
                assert not path.exists()
                continue
            text = path.read_text()
            assert text.startswith("#!/usr/bin/env bash\n")
            assert text.rstrip().endswith(f'protocol.sh" {trainer} {step} "$@"')


def test_wrapper_reports_missing_data(tmp_path):
    result = subprocess.run(["bash", str(REPO / "scripts/bmip/base2new_train.sh"), "eurosat", "1"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    assert result.returncode == 2
    assert "DATA is not set" in result.stderr


def test_sweep_plan():
    chains = sweep.plan_chains(["bmip", "zsclip"], datasets=["eurosat", "dtd"], seeds=[1, 2],
                               xd_targets=["caltech101"], dg_targets=["imagenetv2"])
    steps = [[(job.trainer, job.step, job.dataset, job.seed) for job in chain] for chain in chains]
    assert steps[0] == [("bmip", "base2new_train", "eurosat", 1), ("bmip", "base2new_test", "eurosat", 1),
                        ("bmip", "openworld_test", "eurosat", 1)]
    assert len([chain for chain in steps if chain[0][0] == "bmip"]) == 2 * 2 + 2
    assert [("bmip", "xd_train", "imagenet", 2), ("bmip", "xd_test", "caltech101", 2),
            ("bmip", "xd_test", "imagenetv2", 2)] in steps
    assert {chain[0][3] for chain in steps if chain[0][0] == "zsclip"} == {1}
    only_xd = sweep.plan_chains(["maple"], protocols=["xd"], seeds=[1])
    assert len(only_xd) == 1 and len(only_xd[0]) == 1 + 10


def test_sbatch_script(env):
    chains = sweep.plan_chains(["bmip"], protocols=["base2new"], datasets=["eurosat"], seeds=[1, 2])
    text, _ = sweep.sbatch_script(chains, env, ["--partition=gpu", "--gres=gpu:a100:1"], 4)
    assert "#SBATCH --array=0-1%4" in text
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --gres=gpu:a100:1" in text
    assert "--gres=gpu:1" not in text
    assert f"export DATA={env.data}" in text
    case_1 = text[text.index("  1)"):]
    assert re.search(r"bash \S+/scripts/bmip/base2new_train.sh eurosat 2\n", case_1)
    assert re.search(r"bash \S+/scripts/bmip/base2new_test.sh eurosat 2\n", case_1)
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_run_all_dry_run_says_what_each_run_would_do(env, capsys):
    """Seed 1 trained already, seed 2 stopped after a checkpoint: skip, resume, start."""
    one_epoch = ("OPTIM.MAX_EPOCH", "1")
    write_results(protocols.run_dir(env.output, Job("bmip", "xd_train", "imagenet", 1,
                                                    overrides=one_epoch)), 70.0)
    seed_2 = protocols.run_dir(env.output, Job("bmip", "xd_train", "imagenet", 2,
                                               overrides=one_epoch))
    write_training_log(seed_2, 0.0, finished=False)
    _saved_model(seed_2, "checkpoint", "model.pth.tar-1")
    arguments = ["bmip", "--protocols", "xd", "--seeds", "1", "2", "--xd-targets", "dtd",
                 "--dry-run", "--", "OPTIM.MAX_EPOCH", "1"]
    assert sweep.main(arguments, dict(env.variables)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = r"  (\S.*?)  +bash \S+/(\w+\.sh) (.*)"
    planned = [re.fullmatch(pattern, line).groups() for line in lines if line.startswith("  ")]
    assert planned == [("skip (finished)", "xd_train.sh", "1 OPTIM.MAX_EPOCH 1"),
                       ("start", "xd_test.sh", "dtd 1 OPTIM.MAX_EPOCH 1"),
                       ("resume", "xd_train.sh", "2 OPTIM.MAX_EPOCH 1"),
                       ("start", "xd_test.sh", "dtd 2 OPTIM.MAX_EPOCH 1")]
    assert lines[0] == "chain 1/2:" and lines[-1] == "4 runs: 2 start, 1 resume, 1 skip (finished)"
    # FORCE=1 trains both again from scratch; SHOTS reaches the sweep's commands.
    assert sweep.main(arguments, {**env.variables, "FORCE": "1", "SHOTS": "4"}) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "4 runs: 4 start"  # the 4-shot runs do not exist yet
    assert all("SHOTS=4 bash" in line for line in lines if line.startswith("  "))
    assert sweep.main(arguments, {**env.variables, "FORCE": "1"}) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "4 runs: 2 start, 2 retrain (FORCE=1)")


def _record_commands(monkeypatch, run_folder=None):
    """Replace subprocess.run; record (command, stdout, names in RUN_FOLDER at that moment)."""
    calls = []

    def fake_run(command, **kwargs):
        names = sorted(p.name for p in run_folder.iterdir() if p.name != ".lock") if run_folder else None
        calls.append((command, kwargs.get("stdout"), names))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(protocols.subprocess, "run", fake_run)
    return calls


def test_training_resumes_only_from_a_checkpoint(env, monkeypatch, capsys):
    job = Job("maple", "base2new_train", "eurosat", 1)
    out = protocols.run_dir(env.output, job)
    calls = _record_commands(monkeypatch)
    # A run that failed before its first checkpoint left only its log and config.
    write_training_log(out, 0.0, (40.0,), finished=False)
    (out / "config.yaml").write_text("OPTIM:\n  MAX_EPOCH: 5\n")
    assert protocols.run_job(job, env) == 0
    assert "--resume" not in calls[-1][0]
    assert capsys.readouterr().out == f"starting: {out}\n"
    _saved_model(out, "model-best.pth.tar")  # the best model is not where training stopped
    protocols.run_job(job, env)
    assert "--resume" not in calls[-1][0]
    for checkpoint in ("model.pth.tar-2", "checkpoint"):
        (out / "MultiModalPromptLearner" / "model.pth.tar-2").unlink(missing_ok=True)
        _saved_model(out, checkpoint)
        capsys.readouterr()
        protocols.run_job(job, env)
        command = calls[-1][0]
        assert command[command.index("--resume") + 1] == str(out), checkpoint
        assert capsys.readouterr().out == f"resume: {out}\n"
    assert calls[-1][1] is None  # to the terminal
    fresh = Job("maple", "base2new_train", "eurosat", 2)
    protocols.run_job(fresh, env, console=True)
    assert "--resume" not in calls[-1][0]
    assert calls[-1][1].name == str(protocols.run_dir(env.output, fresh) / "console.txt")


def _staged_runs(monkeypatch, returncode=0, accuracy=90.0):
    """Replace subprocess.run by a train.py that writes ACCURACY to its --output-dir (or fails);
    record (command, names in the run folder the job replaces at that moment)."""
    calls = []

    def fake_run(command, **kwargs):
        output = Path(command[command.index("--output-dir") + 1])
        replaced = output.with_name(output.name.removesuffix(".staging"))
        calls.append((command, sorted(p.name for p in replaced.iterdir() if p.name != ".lock")))
        (output / "log.txt").parent.mkdir(parents=True, exist_ok=True)
        (output / "log.txt").write_text("error: it failed\n" if returncode else "done\n")
        if not returncode:
            write_results(output, accuracy)
        return subprocess.CompletedProcess(command, returncode)

    monkeypatch.setattr(protocols.subprocess, "run", fake_run)
    return calls


def _finished_training_run(env, job):
    out = write_results(protocols.run_dir(env.output, job), 80.0)
    (out / "config.yaml").write_text("OPTIM:\n  MAX_EPOCH: 5\n")
    return _saved_model(out, "checkpoint", "model.pth.tar-5", "model-best.pth.tar")


def test_force_retrains_in_a_staging_folder_that_replaces_the_run(env, monkeypatch, capsys):
    job = Job("maple", "base2new_train", "eurosat", 1)
    out = _finished_training_run(env, job)
    calls = _staged_runs(monkeypatch)
    forced = Environment(env.data, env.output, {**env.variables, "FORCE": "1"})
    assert protocols.run_job(job, forced) == 0
    [(command, names)] = calls
    # While it trains, the old run is whole; train.py writes to the staging folder, afresh.
    assert names == ["MultiModalPromptLearner", "config.yaml", "log.txt", "results.json"]
    assert command[command.index("--output-dir") + 1] == str(out) + ".staging"
    assert "--resume" not in command and "--eval-only" not in command
    assert protocols.read_run_metrics(out)["accuracy"] == 90.0
    assert not (out / "MultiModalPromptLearner").exists()  # the old checkpoints went with it
    assert not Path(str(out) + ".staging").exists()
    assert f"retrain (FORCE=1): {out} (in seed1.staging until it finished)" in (
        capsys.readouterr().out)


def test_a_failed_force_run_keeps_the_previous_results(env, monkeypatch, capsys):
    """FORCE=1 LOAD_EPOCH=N of an epoch that does not exist, and a failing train.py: the good
    result stays, and the error lists the epochs there are."""
    train = _finished_training_run(env, Job("maple", "base2new_train", "eurosat", 1))
    job = Job("maple", "base2new_test", "eurosat", 1)
    out = write_results(protocols.run_dir(env.output, job), 60.0)
    forced = Environment(env.data, env.output, {**env.variables, "FORCE": "1", "LOAD_EPOCH": "7"})
    with pytest.raises(ProtocolError, match="epochs saved: 5"):
        protocols.run_job(replace(job, load_epoch=7), forced)
    forced.variables.pop("LOAD_EPOCH")
    calls = _staged_runs(monkeypatch, returncode=1)
    assert protocols.run_job(job, forced) == 1
    [(command, _)] = calls
    assert "--eval-only" in command and command[command.index("--model-dir") + 1] == str(train)
    assert protocols.read_run_metrics(out)["accuracy"] == 60.0
    assert (train / "MultiModalPromptLearner" / "model.pth.tar-5").is_file()
    assert f"{out} keeps its previous results" in capsys.readouterr().err
    # The next try starts from a clean staging folder and replaces the result once it finished.
    calls = _staged_runs(monkeypatch, accuracy=61.0)
    assert protocols.run_job(job, forced) == 0
    assert protocols.read_run_metrics(out)["accuracy"] == 61.0


def test_run_chains_one_worker_per_gpu_and_a_failure_stops_its_chain(env, monkeypatch):
    seen = []

    def fake_run_job(job, job_env, console=False, companions=()):
        seen.append((job.step, job.dataset, job_env.variables["CUDA_VISIBLE_DEVICES"], console))
        return 1 if job.dataset == "dtd" and job.step == "base2new_train" else 0

    monkeypatch.setattr(sweep, "run_job", fake_run_job)
    chains = sweep.plan_chains(["maple"], protocols=["base2new"], datasets=["eurosat", "dtd"],
                               seeds=[1])
    failures = sweep.run_chains(chains, env, devices=["0", "1"])
    assert [(job.step, job.dataset) for job, _ in failures] == [("base2new_train", "dtd")]
    assert "train.py exited with 1" in failures[0][1]
    steps = [(step, dataset) for step, dataset, _, _ in seen]
    assert sorted(steps) == [("base2new_test", "eurosat"), ("base2new_train", "dtd"),
                             ("base2new_train", "eurosat")]
    assert {device for _, _, device, _ in seen} <= {"0", "1"}
    assert all(console for _, _, _, console in seen)  # side by side: output to console.txt


def test_unknown_dataset_names_the_known_ones(env):
    with pytest.raises(ProtocolError, match=r"unknown dataset 'eurosatt'.*eurosat"):
        protocols.train_command(Job("maple", "base2new_train", "eurosatt", 1), env)


def test_default_configs_exist_and_trainers_are_registered():
    import trainers  # noqa: F401  (registers every trainer)
    from dassl.engine import TRAINER_REGISTRY

    for spec in protocols.TRAINERS.values():
        assert spec.name in TRAINER_REGISTRY.registered_names(), spec.name
        for config in (spec.config, spec.xd_config):
            assert (spec.config_dir / f"{config}.yaml").is_file(), (spec.name, config)


def _timestamped_result(folder, accuracy, timestamp):
    return write_results(folder, accuracy, timestamp=timestamp)


def test_evaluations_of_a_retrained_model_run_again(env, monkeypatch, capsys):
    train_job = Job("maple", "base2new_train", "eurosat", 1)
    train = _saved_model(_timestamped_result(protocols.run_dir(env.output, train_job), 80.0,
                                             "2025-01-01T10:00:00+00:00"), "model.pth.tar-5")
    (train / "config.yaml").write_text("OPTIM:\n  MAX_EPOCH: 5\n")
    evaluations = [Job("maple", step, "eurosat", 1) for step in ("base2new_test", "openworld_test")]
    for job in evaluations:
        _timestamped_result(protocols.run_dir(env.output, job), 60.0, "2025-01-01T11:00:00+00:00")
    assert [protocols.planned_action(job, env) for job in evaluations] == ["skip", "skip"]
    # The training run lost its result (being trained again in place): the evaluations are of
    # a model that is gone.
    (train / "results.json").unlink()
    assert [protocols.planned_action(job, env) for job in evaluations] == ["stale", "stale"]
    # Trained again (its result is newer than the evaluations, whatever the files' mtimes).
    _timestamped_result(train, 82.0, "2025-01-02T10:00:00+00:00")
    _saved_model(train, "model.pth.tar-5")
    chain = [train_job, *evaluations]
    lines = sweep.dry_run_lines([chain], env)
    assert [line.split("  ")[1].strip() for line in lines[1:4]] == [
        "skip (finished)", "re-evaluate (model changed)", "re-evaluate (model changed)"]
    out = protocols.run_dir(env.output, evaluations[0])
    _staged_runs(monkeypatch, accuracy=62.0)
    assert protocols.run_job(evaluations[0], env) == 0
    assert protocols.read_run_metrics(out)["accuracy"] == 62.0
    assert f"re-evaluate (model changed): {out}" in capsys.readouterr().out
    # An evaluation newer than the model stays finished.
    _timestamped_result(out, 61.0, "2025-01-02T11:00:00+00:00")
    assert protocols.planned_action(evaluations[0], env) == "skip"


def test_cross_dataset_evaluations_follow_their_source_model(env):
    train = protocols.run_dir(env.output, Job("bmip", "xd_train", "imagenet", 1))
    evaluation = Job("bmip", "xd_test", "imagenet_a", 1)
    _timestamped_result(protocols.run_dir(env.output, evaluation), 50.0, "2025-01-01T11:00:00+00:00")
    _timestamped_result(train, 70.0, "2025-01-01T12:00:00+00:00")
    assert protocols.planned_action(evaluation, env) == "stale"
    # Runs without a recorded timestamp (legacy logs) compare the result files' mtimes.
    legacy = protocols.run_dir(env.output, Job("bmip", "xd_test", "eurosat", 1))
    write_results(legacy, 40.0)
    old = train.joinpath("results.json").stat().st_mtime - 100
    os.utime(legacy / "results.json", (old, old))
    write_results(train, 70.0)
    assert protocols.planned_action(Job("bmip", "xd_test", "eurosat", 1), env) == "stale"
    os.utime(legacy / "results.json", (old + 200, old + 200))
    assert protocols.planned_action(Job("bmip", "xd_test", "eurosat", 1), env) == "skip"


# MaPLe's script names (multimodal-prompt-learning/scripts/<folder>/*_<method>.sh): all take
# DATASET SEED, reproduce* also WEIGHTSPATH; xd_train's DATASET is the source (imagenet).
# Keyed by (MaPLe's folder, our trainer).
MAPLE_SCRIPT_NAMES = {
    ("maple", "maple"): {
        "base2new_train_maple": "base2new_train", "base2new_test_maple": "base2new_test",
        "xd_train_maple": "xd_train", "xd_test_maple": "xd_test",
        "reproduce_maple": "reproduce", "reproduce_maple_xd": "reproduce_xd"},
    ("independent-vlp", "ivlp"): {
        "base2new_train_ivlp": "base2new_train", "base2new_test_ivlp": "base2new_test",
        "xd_train_ivlp": "xd_train", "xd_test_ivlp": "xd_test", "reproduce_ivlp": "reproduce"},
    ("vpt", "vpt"): {
        "base2new_train_vpt": "base2new_train", "base2new_test_vpt": "base2new_test",
        "xd_train_vpt": "xd_train", "xd_test_vpt": "xd_test", "reproduce_vpt": "reproduce"},
}


@pytest.mark.parametrize("folder, trainer", sorted(MAPLE_SCRIPT_NAMES))
def test_maple_script_names_run_ours_with_the_same_arguments(folder, trainer, tmp_path):
    for alias, step in MAPLE_SCRIPT_NAMES[folder, trainer].items():
        path = REPO / "scripts" / folder / f"{alias}.sh"
        arguments = ["imagenet", "2"] + (["weights/imagenet"] if alias.startswith("reproduce") else [])
        # PYTHON=echo prints the command protocol.sh would run instead of running it.
        result = subprocess.run(["bash", str(path), *arguments], capture_output=True, text=True,
                                cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHON": "echo"})
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["-m", "scripts.protocols", trainer, step, *arguments]
        if not alias.startswith("reproduce"):  # (reproduce checks that the weights exist)
            [job] = protocols.jobs_from_arguments(trainer, step, arguments, {})
            assert (job.dataset, job.seed) == ("imagenet", 2)


def test_one_pass_only_where_classes_are_scored_independently(env):
    """The open-world test carries the base / new tests of the same model when all need
    running, unless the trainer mixes classes (BMIP's ATTN_POOL authors)."""
    for config in ("", "BMIP_ctx2_dp9_lr2_authors"):
        jobs = [Job("bmip", step, "eurosat", 1, config=config)
                for step in ("base2new_test", "xd_test", "openworld_test")]
        _saved_model(protocols.run_dir(env.output, jobs[0].model_job()), "model-best.pth.tar")
        expected = (jobs[2], jobs[:1]) if not config else (jobs[0], [])
        assert protocols.one_pass(jobs, env) == expected, config
        assert protocols.one_pass(jobs[:2], env) == (jobs[0], [])
    finished = Job("bmip", "base2new_test", "eurosat", 1)
    for job, accuracy, hour in ((finished.model_job(), 80.0, 10), (finished, 60.0, 11)):
        write_results(protocols.run_dir(env.output, job), accuracy,
                      timestamp=f"2025-01-01T{hour}:00:00+00:00")
    jobs = [finished, replace(finished, step="openworld_test")]
    assert protocols.one_pass(jobs, env) == (finished, [])  # only what needs running
