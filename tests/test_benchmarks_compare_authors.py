"""benchmarks/compare_authors.py and timed_train.py: the logic that needs neither the authors' code
nor a timed run (pairing, ratios, verdicts, figures of a run, missing checkouts, the timers)."""
import json
import math
import os

import pytest

from benchmarks import compare_authors as ca
from benchmarks import timed_train as tt


def figures(step, evaluation):
    return {"step": step, "eval": evaluation}


def test_runs_are_interleaved_a_b_b_a():
    assert ca.interleaved_sides(1) == ["ours", "authors"]
    assert ca.interleaved_sides(3) == ["ours", "authors", "authors", "ours", "ours", "authors"]


def test_ratios_are_ours_over_authors_within_each_adjacent_pair():
    runs = [("ours", figures(1.0, 30.0)), ("authors", figures(2.0, 20.0)),
            ("authors", figures(4.0, 10.0)), ("ours", figures(3.0, 15.0))]
    ratios = ca.pair_ratios(runs)
    assert ratios["step"] == pytest.approx([0.5, 0.75])
    assert ratios["eval"] == pytest.approx([1.5, 1.5])


def test_pairs_must_hold_one_run_of_each_side():
    with pytest.raises(ValueError, match="one run of each side"):
        ca.pair_ratios([("ours", figures(1, 1)), ("ours", figures(1, 1))])
    with pytest.raises(ValueError, match="odd"):
        ca.pair_ratios([("ours", figures(1, 1))])


@pytest.mark.parametrize("key, ratios, expected", [
    ("step", [0.5, 0.8], "met"),
    ("step", [0.81, 1.2], "NOT met"),
    ("step", [0.7, 0.9, 1.0], "mixed: met in 1 of 3 pairs"),
    ("eval", [1.2, 2.0], "met"),
    ("eval", [1.19, 0.9], "NOT met"),
    ("eval", [1.3, 1.1], "mixed: met in 1 of 2 pairs"),
])
def test_verdicts_against_the_targets(key, ratios, expected):
    assert ca.verdict(ratios, key) == expected


def timing_record(steps, tests, losses=None):
    return {"steps": steps, "losses": losses or [1.0] * len(steps), "tests": tests}


def test_run_figures_leave_out_the_warm_up_and_read_the_last_test():
    record = timing_record([9.0, 5.0, 1.0, 3.0, 2.0], [
        {"split": "val", "images": 10, "seconds": 1.0, "model_seconds": 1.0, "accuracy": 1.0},
        {"split": "test", "images": 50, "seconds": 5.0, "model_seconds": 2.5, "accuracy": 40.0},
    ])
    out = ca.run_figures(record, warmup=2)
    assert out["step"] == 2.0            # median of 1, 3, 2: the 9 s and 5 s warm-up steps are out
    assert out["eval"] == 20.0           # 50 images / 2.5 s inside model_inference
    assert out["eval_wall"] == 10.0
    assert out["finite"] and out["steps"] == 5
    assert not ca.run_figures(timing_record([1.0, 1.0], record["tests"], [1.0, math.nan]), 0)["finite"]


def test_run_figures_refuse_runs_without_figures():
    test = [{"split": "test", "images": 5, "seconds": 1, "model_seconds": 1, "accuracy": 1}]
    with pytest.raises(ValueError, match="--warmup"):
        ca.run_figures(timing_record([1.0, 1.0], test), warmup=2)
    with pytest.raises(ValueError, match="no test"):
        ca.run_figures(timing_record([1.0, 1.0, 1.0], []), warmup=1)


@pytest.fixture
def no_checkout_env(monkeypatch):
    for name in ("MAPLE_DIR", "BMIP_DIR", "DASSL_DIR", "AUTHORS_PYTHONPATH"):
        monkeypatch.delenv(name, raising=False)


def test_without_any_checkout_it_says_what_to_fetch(no_checkout_env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ca.main([])
    message = str(exit_info.value.code)
    assert "\n" not in message
    for url in ("muzairkhattak/multimodal-prompt-learning", "LAMDASZ-ML/BMIP", "KaiyangZhou/Dassl.pytorch"):
        assert url in message
    assert "skipping MaPLe" in capsys.readouterr().out


def make_checkout(root, marker, *extra):
    for path in (marker,) + extra:
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        open(os.path.join(root, path), "w").close()
    return str(root)


def test_a_missing_method_is_skipped_and_bmips_dassl_copy_is_used(no_checkout_env, tmp_path, capsys):
    bmip = make_checkout(tmp_path / "bmip", "trainers/bmip.py", "Dassl.pytorch-master/dassl/__init__.py")
    found, dassl = ca.find_checkouts(ca.parse_args(["--bmip-dir", bmip]))
    assert found == {"bmip": bmip}
    assert dassl == os.path.join(bmip, "Dassl.pytorch-master")
    assert "skipping MaPLe" in capsys.readouterr().out


def test_wrong_checkouts_are_refused_in_one_line(no_checkout_env, tmp_path):
    maple = make_checkout(tmp_path / "maple", "trainers/maple.py")
    with pytest.raises(SystemExit, match="needs Dassl"):
        ca.find_checkouts(ca.parse_args(["--maple-dir", maple]))
    with pytest.raises(SystemExit, match="no dassl package"):
        ca.find_checkouts(ca.parse_args(["--maple-dir", maple, "--dassl-dir", str(tmp_path)]))
    with pytest.raises(SystemExit, match="not a checkout of"):
        ca.find_checkouts(ca.parse_args(["--maple-dir", str(tmp_path)]))


def test_commands_run_each_side_on_its_own_code_with_the_same_job(tmp_path):
    args = ca.parse_args(["--image-resolution", "32", "--iters", "4"])
    data = {"ours": "D_OURS", "authors": "D_AUTHORS"}
    method = ca.METHODS["bmip"]
    ours = ca.train_command("ours", method, args, {"bmip": "B"}, "DASSL", "C.pt", data, "OUT", "T")
    theirs = ca.train_command("authors", method, args, {"bmip": "B"}, "DASSL", "C.pt", data, "OUT", "T")
    job = ["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base", "INPUT.SIZE", "(32, 32)",
           "TRAINER.BMIP.PREC", "fp32", "TEST.FINAL_MODEL", "last_step"]
    for command, root, data_root in ((ours, ca.REPO_ROOT, "D_OURS"), (theirs, "B", "D_AUTHORS")):
        train_args = command[command.index("--") + 1:]
        for key, value in zip(job[::2], job[1::2]):
            assert train_args[train_args.index(key) + 1] == value
        assert train_args[train_args.index("--root") + 1] == data_root
        assert train_args[train_args.index("--config-file") + 1] == os.path.join(root, method.config)
    assert "MODEL.BACKBONE.NAME" in ours and "--clip" not in ours
    assert theirs[theirs.index("--clip") + 1] == "C.pt" and "--device" in theirs


def test_bad_options_are_refused():
    for argv in (["--image-resolution", "30"], ["--iters", "2", "--warmup", "2"], ["--pairs", "0"]):
        with pytest.raises(SystemExit):
            ca.parse_args(argv)


class FakeTrainer:
    class cfg:
        class TEST:
            SPLIT = "test"

    def __init__(self):
        self.computed = 0

    def forward_backward(self, batch):
        self.computed += 1
        return {"loss": float(batch)}

    def model_inference(self, images):
        return images

    def test(self, split=None):
        for _ in range(2):
            self.model_inference(_Images())
        return 42.0


class _Images:
    shape = (3,)


def test_the_timers_compute_iters_steps_then_skip(tmp_path):
    path = str(tmp_path / "t.json")
    timings = tt.Timings(path, iters=2, info={"side": "ours"})
    trainer = FakeTrainer()
    timings.instrument(trainer)
    summaries = [trainer.forward_backward(batch) for batch in (1, 2, 3, 4)]
    assert trainer.computed == 2
    assert [s["loss"] for s in summaries] == [1.0, 2.0, 2.0, 2.0]
    trainer.model_inference(_Images())       # outside test(): not counted
    assert trainer.test() == 42.0
    record = json.load(open(path))
    assert len(record["steps"]) == 2 and record["losses"] == [1.0, 2.0]
    (test,) = record["tests"]
    assert test["split"] == "test" and test["images"] == 6 and len(test["batches"]) == 2
    assert test["accuracy"] == 42.0 and test["model_seconds"] <= test["seconds"]


def test_the_memory_step_is_measured_and_the_run_can_end_after_its_steps(tmp_path, monkeypatch):
    path = str(tmp_path / "t.json")
    timings = tt.Timings(path, iters=2, info={"side": "ours"}, memory_step=2,
                         exit_after_steps=True)
    trainer = FakeTrainer()
    trainer.device = "cpu"   # the authors' BMIP keeps its device as a string
    timings.instrument(trainer)
    exits = []
    monkeypatch.setattr(tt.os, "_exit", exits.append)
    trainer.forward_backward(1)
    assert "memory" not in json.load(open(path)) and exits == []
    trainer.forward_backward(2)
    record = json.load(open(path))
    assert record["memory"]["step"] == 2 and record["memory"]["peak"] >= 0
    assert record["memory"]["total"] > 0 and record["memory"]["method"].startswith("VmHWM")
    assert exits == [0]


def test_memory_runs_train_two_steps_on_the_many_class_imagenet(tmp_path):
    args = ca.parse_args(["--classes", "1000", "--authors-classes", "100", "200"])
    assert args.precisions == ["fp32", "bf16"] and args.batch == 4 and args.fit_batch == 8
    method = ca.METHODS["maple"]
    ours = ca.memory_command("ours", method, args, {"maple": "M"}, "DASSL", "C.pt", "DATA",
                             "OUT", "T", "bf16", 8)
    theirs = ca.memory_command("authors", method, args, {"maple": "M"}, "DASSL", "C.pt", "DATA",
                               "OUT", "T", "fp32", 4)
    for command, root, prec, batch in ((ours, ca.REPO_ROOT, "bf16", "8"), (theirs, "M", "fp32", "4")):
        runner, train_args = command[:command.index("--")], command[command.index("--") + 1:]
        assert runner[runner.index("--memory-step") + 1] == "2" and "--exit-after-steps" in runner
        assert runner[runner.index("--iters") + 1] == "2"
        assert train_args[train_args.index("--dataset-config-file") + 1] == os.path.join(
            root, "configs/datasets/imagenet.yaml")
        assert train_args[train_args.index("DATASET.SUBSAMPLE_CLASSES") + 1] == "all"
        assert train_args[train_args.index("DATALOADER.TRAIN_X.BATCH_SIZE") + 1] == batch
        # The last PREC given wins (yacs merges in order).
        assert train_args[len(train_args) - 1 - train_args[::-1].index("TRAINER.MAPLE.PREC") + 1] == prec


def test_memory_lines_and_largest_batches():
    intercept, slope = ca.fit_line([(100, 5e8), (200, 9e8), (300, 13e8)])
    assert intercept == pytest.approx(1e8) and slope == pytest.approx(4e6)
    # 2 GB at batch 4, 3 GB at batch 8: 0.25 GB per image above 1 GB.
    assert ca.largest_batch(8e9, 2e9, 3e9, 4, 8) == 28
    assert ca.largest_batch(0.5e9, 2e9, 3e9, 4, 8) == 0
    assert ca.largest_batch(8e9, 2e9, 2e9, 4, 8) is None


@pytest.mark.parametrize("argv", [
    ["--authors-classes", "100", "200"],                      # without --classes
    ["--precisions", "bf16"],
    ["--classes", "1000", "--authors-classes", "100"],        # one count: no line
    ["--classes", "1", ],
    ["--classes", "1000", "--fit-batch", "4"],
])
def test_bad_memory_options_are_refused(argv):
    with pytest.raises(SystemExit):
        ca.parse_args(argv)
