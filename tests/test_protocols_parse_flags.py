"""parse_test_res.py's user-facing flags: --keyword (CoOp's), the MaPLe docs' parse path after
reproduce.sh, and --plot."""
import json
import statistics
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

import parse_test_res
from tests.helpers.protocols import (b2n_dir, write_results, write_test_log, write_training_log,
                                     xd_test_dir)

CFG = "vit_b16_c2_ep5_batch4_2ctx"


def run_parser(*argv):
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = parse_test_res.main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def output(tmp_path):
    root = tmp_path / "output"
    for seed, (base, new) in enumerate([(80.0, 70.0), (82.0, 72.0)], start=1):
        write_results(b2n_dir(root, "train_base", "eurosat", "MaPLe", CFG, seed), base,
                      macro_f1=base - 10)
        write_results(b2n_dir(root, "test_new", "eurosat", "MaPLe", CFG, seed), new,
                      macro_f1=new - 20)
    return root


def test_keyword_tabulates_any_recorded_metric(output):
    code, out, _ = run_parser(output, "--keyword", "macro_f1", "--format", "json")
    assert code == 0
    records = json.loads(out)["records"]
    cells = {(r["metric"], r["dataset"]): r for r in records if r["table"] == "base2new"}
    assert cells[("base", "EuroSAT")]["mean"] == pytest.approx(71.0)   # (70 + 72) / 2
    assert cells[("new", "EuroSAT")]["mean"] == pytest.approx(51.0)    # (50 + 52) / 2
    assert cells[("HM", "EuroSAT")]["mean"] == pytest.approx(2 * 71 * 51 / (71 + 51))
    assert {r["keyword"] for r in records} == {"macro_f1"}
    code, out, _ = run_parser(output, "--keyword", "error")
    assert code == 0 and "Metric: error (--keyword)" in out
    assert "19.00" in out  # base error: 100 - 81


def test_keyword_in_the_classic_form_and_legacy_logs(tmp_path):
    experiment = tmp_path / "output/eurosat/CoOp/rn50_16shots/nctx16_cscFalse_ctpend"
    write_training_log(experiment / "seed1", 71.0)
    write_training_log(experiment / "seed2", 73.0)
    code, out, _ = run_parser(experiment, "--keyword", "macro_f1")
    assert code == 0
    assert "* macro_f1: 50.00% +- 0.00%" in out and "* accuracy" not in out
    code, out, _ = run_parser(experiment, "--keyword", "error")
    assert "* error: 28.00% +- 1.00%" in out


def test_unknown_keyword_and_paper_are_refused_with_a_reason(output):
    code, _, err = run_parser(output, "--keyword", "top5")
    assert code == 2
    assert "records top5" in err and "macro_f1" in err  # says what is recorded
    code, _, err = run_parser(output, "--keyword", "macro_f1", "--paper")
    assert code == 2 and "--paper" in err


def test_runs_lacking_the_keyword_are_named(output):
    write_test_log(b2n_dir(output, "test_new", "dtd", "MaPLe", CFG, 1), 60.0)  # records macro_f1
    legacy = b2n_dir(output, "test_new", "dtd", "MaPLe", CFG, 2)
    write_results(legacy, 61.0)
    record = json.loads((legacy / "results.json").read_text())
    del record["macro_f1"]
    (legacy / "results.json").write_text(json.dumps(record))
    code, _, err = run_parser(output, "--keyword", "macro_f1")
    assert code == 0
    assert "1 finished run(s) record no macro_f1" in err and str(legacy) in err


def released_tree(root):
    """What reproduce.sh / reproduce_xd.sh write for released MaPLe weights."""
    for seed, accuracy in ((1, 70.0), (2, 72.0)):
        write_results(b2n_dir(root, "test_base", "imagenet", "MaPLe", f"{CFG}_released", seed),
                      accuracy + 6)
        write_results(b2n_dir(root, "test_new", "imagenet", "MaPLe", f"{CFG}_released", seed),
                      accuracy)
        write_results(xd_test_dir(root, "food101", "MaPLe", f"{CFG}_cross_datasets_released",
                                  seed), accuracy + 16)


@pytest.mark.parametrize("documented, found, mean", [
    # MaPLe's docs/RUN.md, after reproduce_maple.sh, verbatim:
    (f"base2new/train_base/imagenet/shots_16/MaPLe/{CFG}",
     f"base2new/test_base/imagenet/shots_16/MaPLe/{CFG}_released", 77.0),
    (f"base2new/test_new/imagenet/shots_16/MaPLe/{CFG}",
     f"base2new/test_new/imagenet/shots_16/MaPLe/{CFG}_released", 71.0),
    (f"evaluation/MaPLe/{CFG}_cross_datasets_16shots/food101",
     f"evaluation/MaPLe/{CFG}_cross_datasets_released_16shots/food101", 87.0),
])
def test_maple_documented_parse_path_finds_the_released_folder(tmp_path, documented, found, mean):
    released_tree(tmp_path / "output")
    code, out, _ = run_parser(tmp_path / "output" / documented, "--test-log")
    assert code == 0
    assert f"reading {tmp_path / 'output' / found}" in out
    assert f"* accuracy: {mean:.2f}%" in out


def test_a_folder_that_is_not_there_and_not_released_is_an_error(tmp_path):
    code, _, err = run_parser(tmp_path / "output/base2new/test_new/dtd/shots_16/MaPLe" / CFG)
    assert code == 2 and "is not a folder" in err


def test_trained_runs_win_over_released_ones(tmp_path):
    root = tmp_path / "output"
    released_tree(root)
    trained = b2n_dir(root, "test_new", "imagenet", "MaPLe", CFG, 1)
    write_results(trained, 50.0)
    code, out, _ = run_parser(trained.parent)
    assert code == 0 and "reading" not in out and "* accuracy: 50.00%" in out


def test_plot_every_table_with_error_bars_paper_marks_and_a_visible_zero(tmp_path):
    root = tmp_path / "output"
    xd = "BMIP_ctx2_dp9_lr2_cross_datasets"
    for seed, (base, new) in enumerate([(80.0, 70.0), (84.0, 74.0)], start=1):
        write_results(b2n_dir(root, "train_base", "eurosat", "BMIP", "BMIP_ctx2_dp9_lr2", seed), base)
        write_results(b2n_dir(root, "test_new", "eurosat", "BMIP", "BMIP_ctx2_dp9_lr2", seed), new)
        write_results(b2n_dir(root, "train_base", "eurosat", "MaPLe", CFG, seed), 50.0)
        write_results(b2n_dir(root, "test_new", "eurosat", "MaPLe", CFG, seed), 0.0)  # HM 0
        write_results(b2n_dir(root, "test_all", "eurosat", "BMIP", "BMIP_ctx2_dp9_lr2", seed), 60.0)
        write_results(xd_test_dir(root, "caltech101", "BMIP", xd, seed), 90.0 + seed)
        write_results(xd_test_dir(root, "imagenetv2", "BMIP", xd, seed), 60.0)
    tables = parse_test_res.build_tables(parse_test_res.find_runs(root))
    paper = parse_test_res.load_paper_results()
    plotted = parse_test_res.plot_tables(tables, tmp_path / "all.png", paper)
    assert set(plotted) == {"base2new", "openworld", "xd", "dg"}
    metric, series = plotted["base2new"]
    eurosat = tables[0].datasets.index("EuroSAT")
    assert metric == "HM"
    assert series["MaPLe"]["heights"][eurosat] == 0.0
    hms = [2 * b * n / (b + n) for b, n in ((80.0, 70.0), (84.0, 74.0))]
    assert series["BMIP"]["errors"][eurosat] == pytest.approx(statistics.pstdev(hms))
    assert series["BMIP"]["paper"][eurosat] is not None  # the paper's EuroSAT HM as a marker
    metric, series = plotted["xd"]
    assert series["BMIP"]["errors"][plotted_index(tables, "xd", "Caltech101")] == pytest.approx(0.5)
    code, out, _ = run_parser(root, "--plot", tmp_path / "again.png", "--paper")
    assert code == 0 and f"wrote {tmp_path / 'again.png'}" in out
    assert (tmp_path / "again.png").read_bytes()[:4] == b"\x89PNG"


def plotted_index(tables, name, dataset):
    return next(table for table in tables if table.name == name).datasets.index(dataset)


def test_zero_bar_is_drawn_visible(tmp_path, monkeypatch):
    import matplotlib.axes
    heights = []
    original = matplotlib.axes.Axes.bar

    def spy(self, x, height, *args, **kwargs):
        heights.extend(height)
        return original(self, x, height, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    root = tmp_path / "output"
    write_results(b2n_dir(root, "train_base", "eurosat", "MaPLe", CFG, 1), 50.0)
    write_results(b2n_dir(root, "test_new", "eurosat", "MaPLe", CFG, 1), 0.0)
    tables = parse_test_res.build_tables(parse_test_res.find_runs(root))
    parse_test_res.plot_tables(tables, tmp_path / "zero.png")
    assert heights and all(height > 0 for height in heights)
