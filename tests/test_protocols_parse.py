"""parse_test_res.py on hand-built output trees: exact means, stds, HMs, formats, classic form.

Expected numbers are computed by hand below (population std, as numpy's default that the
upstream script uses), not with the parser's own helpers.
"""
import csv
import io
import json
import math
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

import parse_test_res
import train
from dassl.utils import close_logger
from scripts import protocols
from tests.helpers.engine import TOY_CLASSES  # noqa: F401  (registers the toy trainer and dataset)
from tests.helpers.protocols import (b2n_dir, write_results, write_test_log, write_training_log,
                                     write_unfinished, xd_test_dir, xd_train_dir)

BMIP = "BMIP_ctx2_dp9_lr2"
MAPLE = "vit_b16_c2_ep5_batch4_2ctx"
REPO = Path(__file__).resolve().parent.parent
BMIP_XD = "BMIP_ctx2_dp9_lr2_cross_datasets"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """BMIP in our form (results.json), MaPLe in the legacy form (log.txt only, seed 3 missing)."""
    root = tmp_path_factory.mktemp("parse") / "output"
    for seed, base, new in ((1, 90, 70), (2, 92, 74), (3, 94, 72)):
        write_results(b2n_dir(root, "train_base", "eurosat", "BMIP", BMIP, seed), base)
        write_results(b2n_dir(root, "test_new", "eurosat", "BMIP", BMIP, seed), new)
    for seed, base, new in ((1, 80, 60), (2, 84, 64)):
        # The validation result (99%) printed before "Finished training" must be ignored.
        write_training_log(b2n_dir(root, "train_base", "eurosat", "MaPLe", MAPLE, seed), base,
                           val_accuracies=(99.0,))
        write_test_log(b2n_dir(root, "test_new", "eurosat", "MaPLe", MAPLE, seed), new)
    for seed, base in ((1, 60), (2, 62), (3, 64)):
        write_results(b2n_dir(root, "train_base", "dtd", "BMIP", BMIP, seed), base)
    write_results(b2n_dir(root, "test_new", "dtd", "BMIP", BMIP, 1), 50)
    write_results(b2n_dir(root, "test_new", "dtd", "BMIP", BMIP, 2), 52)
    write_unfinished(b2n_dir(root, "test_new", "dtd", "BMIP", BMIP, 3))
    for seed, acc, base, new in ((1, 60, 70, 50), (2, 63, 70, 56), (3, 66, 70, 62)):
        write_results(b2n_dir(root, "test_all", "eurosat", "BMIP", BMIP, seed), acc,
                      base_accuracy=base, new_accuracy=new)
    for seed, acc in ((1, 55), (2, 57)):
        write_test_log(b2n_dir(root, "test_all", "eurosat", "MaPLe", MAPLE, seed), acc,
                       extra_metrics=(("base_accuracy", 60.0), ("new_accuracy", 50.0)))
    for seed, source, caltech, eurosat, v2 in ((1, 70, 93, 40, 64), (2, 71, 94, 50, 64),
                                               (3, 72, 95, 60, 64)):
        write_results(xd_train_dir(root, "imagenet", "BMIP", BMIP_XD, seed), source)
        write_results(xd_test_dir(root, "caltech101", "BMIP", BMIP_XD, seed), caltech)
        write_results(xd_test_dir(root, "eurosat", "BMIP", BMIP_XD, seed), eurosat)
        write_results(xd_test_dir(root, "imagenetv2", "BMIP", BMIP_XD, seed), v2)
    return root


@pytest.fixture(scope="module")
def tables(tree):
    return {table.name: table for table in parse_test_res.build_tables(
        parse_test_res.find_runs(tree))}


def run_main(*args, stderr=None):
    buffer = io.StringIO()
    with redirect_stdout(buffer), redirect_stderr(stderr or io.StringIO()):
        returncode = parse_test_res.main([str(arg) for arg in args])
    return returncode, buffer.getvalue()


def hm(base, new):
    return 2 * base * new / (base + new)


def test_base_new_hm_means_and_stds(tables):
    table = tables["base2new"]
    base = table.cells[("BMIP", "EuroSAT", "base")]
    new = table.cells[("BMIP", "EuroSAT", "new")]
    assert base.mean == pytest.approx(92.0) and base.std == pytest.approx(math.sqrt(8 / 3))
    assert new.mean == pytest.approx(72.0) and new.std == pytest.approx(math.sqrt(8 / 3))
    hm_cell = table.cells[("BMIP", "EuroSAT", "HM")]
    assert hm_cell.mean == pytest.approx(2 * 92 * 72 / 164)  # HM of the means, not mean of HMs
    per_seed = [hm(90, 70), hm(92, 74), hm(94, 72)]
    mean = sum(per_seed) / 3
    assert hm_cell.std == pytest.approx(math.sqrt(sum((h - mean) ** 2 for h in per_seed) / 3))


def test_legacy_logs_missing_and_unfinished_seeds(tables):
    table = tables["base2new"]
    maple_base = table.cells[("MaPLe", "EuroSAT", "base")]
    assert maple_base.values == {1: 80.0, 2: 84.0} and maple_base.std == pytest.approx(2.0)
    dtd_new = table.cells[("BMIP", "DescribableTextures", "new")]
    assert dtd_new.values == {1: 50.0, 2: 52.0}
    assert set(dtd_new.unfinished) == {3}
    assert table.cells.get(("MaPLe", "DescribableTextures", "base")) is None


def test_average_row_is_hm_of_mean_base_and_new(tables):
    table = tables["base2new"]
    assert table.cells[("BMIP", "Average", "base")].mean == pytest.approx((92 + 62) / 2)
    assert table.cells[("BMIP", "Average", "new")].mean == pytest.approx((72 + 51) / 2)
    # The HM pairs base and new over the seeds that have both: DTD's base over seeds 1 and 2
    # (61), not over 1-3 (62), since its seed 3 has no new-class result (issue 19, item 7).
    assert table.cells[("BMIP", "Average", "HM")].mean == pytest.approx(hm((92 + 61) / 2, 61.5))
    assert table.cells[("MaPLe", "Average", "base")].datasets == ("EuroSAT",)


def test_openworld_and_transfer_tables(tables):
    openworld = tables["openworld"]
    assert openworld.cells[("BMIP", "EuroSAT", "Acc")].mean == pytest.approx(63.0)
    assert openworld.cells[("BMIP", "EuroSAT", "Acc")].std == pytest.approx(math.sqrt(6))
    assert openworld.cells[("BMIP", "EuroSAT", "Acc new")].mean == pytest.approx(56.0)
    assert openworld.cells[("MaPLe", "EuroSAT", "Acc base")].mean == pytest.approx(60.0)
    assert openworld.cells[("BMIP", "EuroSAT", "HM")].mean == pytest.approx(2 * 92 * 72 / 164)
    xd = tables["xd"]
    assert xd.datasets == ["ImageNet (source)", "Caltech101", "EuroSAT", "Average"]
    assert xd.cells[("BMIP", "ImageNet (source)", "accuracy")].mean == pytest.approx(71.0)
    assert xd.cells[("BMIP", "Average", "accuracy")].mean == pytest.approx((94 + 50) / 2)
    dg = tables["dg"]
    assert dg.cells[("BMIP", "Average", "accuracy")].mean == pytest.approx((71 + 64) / 2)
    assert dg.cells[("BMIP", "OOD Average", "accuracy")].mean == pytest.approx(64.0)


def test_terminal_table_prints_exact_cells_and_marks_problems(tree):
    returncode, out = run_main(tree)
    assert returncode == 0
    for text in ("92.00 ± 1.63 (3)", "72.00 ± 1.63 (3)", "80.78 ± 1.44 (3)", "51.00 ± 1.00 (2/3)",
                 "82.00 ± 2.00 (2)", "70.61", "68.18 (2/11 datasets)", "82.00 (1/11 datasets)",
                 "72.00 (2/10 datasets)", "67.50 (2/5 datasets)", "64.00 (1/4 datasets)"):
        assert text in out
    assert "DescribableTextures · new: seed 3 unfinished" in out


def test_requested_seeds_mark_missing_ones(tree):
    _, out = run_main(tree, "--seeds", 1, 2, 3)
    assert "82.00 ± 2.00 (2/3)" in out
    assert "MaPLe · EuroSAT · base: missing seed(s) 3" in out


# Student's t quantiles t(0.975, df) from a printed table (df = seeds - 1).
T_975 = {1: 12.706204736174698, 2: 4.302652729749464}


def test_ci95(tree):
    _, out = run_main(tree, "--ci95")
    # Seeds 90, 92, 94: sample std 2, so t(0.975, 2) * 2 / sqrt(3) = 4.97.
    assert f"92.00 ± {T_975[2] * 2 / math.sqrt(3):.2f} (3)" in out
    # MaPLe's two seeds 80, 84: sample std 2 * sqrt(2), t(0.975, 1) * 2 * sqrt(2) / sqrt(2) = 25.41.
    assert f"82.00 ± {T_975[1] * 2:.2f} (2)" in out
    assert parse_test_res.ci95([70.0]) is None  # one seed: no interval


def test_help_states_the_interval_formula():
    with pytest.raises(SystemExit), redirect_stdout(io.StringIO()) as out:
        parse_test_res.main(["--help"])
    assert "t(0.975, n-1) * s / sqrt(n)" in " ".join(out.getvalue().split())


def test_paper_numbers_beside_ours(tree):
    _, out = run_main(tree, "--paper")
    assert "80.78 ± 1.44 (3) [paper 86.10, Δ -5.32]" in out          # Table 1, EuroSAT HM
    # Averages over fewer datasets than the paper's get no difference.
    assert "77.00 (2/11 datasets) [paper 83.47, Δ —]" in out         # README base average
    assert "71.00 ± 0.82 (3) [paper 70.86, Δ +0.14]" in out          # Table 2 ImageNet
    assert "64.00 (1/4 datasets) [paper 60.40, Δ —]" in out          # Table 3 OOD average
    _, out = run_main(tree, "--paper", "--format", "json")
    [average] = [row for row in json.loads(out)["records"] if row["table"] == "dg"
                 and row["dataset"] == "OOD Average" and row["method"] == "BMIP"]
    assert average["paper_mean"] == 60.40 and average["diff"] is None


def test_json_round_trip(tree, tables):
    _, out = run_main(tree, "--format", "json", "--paper")
    document = json.loads(out)
    expected = parse_test_res.records(list(tables.values()), parse_test_res.load_paper_results())
    assert document["records"] == expected
    hm_record = next(r for r in document["records"] if r["table"] == "base2new"
                     and r["method"] == "BMIP" and r["dataset"] == "EuroSAT" and r["metric"] == "HM")
    assert hm_record["mean"] == 2 * 92 * 72 / 164 and hm_record["paper_mean"] == 86.10
    assert any("seed 3 unfinished" in line for line in document["problems"])


def test_csv_round_trip(tree, tables):
    _, out = run_main(tree, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = parse_test_res.records(list(tables.values()))
    assert len(rows) == len(expected)
    for row, record in zip(rows, expected):
        for key, value in record.items():
            if key in parse_test_res.LIST_FIELDS:
                assert row[key] == ";".join(map(str, value))
            elif isinstance(value, float):
                assert float(row[key]) == value
            else:
                assert row[key] == ("" if value is None else str(value))


def test_markdown_and_latex(tree):
    _, markdown = run_main(tree, "--format", "markdown")
    assert "| EuroSAT " in markdown and "### Base-to-new" in markdown
    _, latex = run_main(tree, "--format", "latex")
    assert r"92.00 $\pm$ 1.63 (3)" in latex and r"\begin{tabular}" in latex


def test_plot_writes_png(tree, tmp_path):
    path = tmp_path / "hm.png"
    returncode, _ = run_main(tree, "--plot", path)
    assert returncode == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_classic_single_experiment(tree):
    folder = tree / "base2new/train_base/eurosat/shots_16/MaPLe" / MAPLE
    returncode, out = run_main(folder)
    assert returncode == 0
    assert "* accuracy: 82.00% +- 2.00%" in out and f"Summary of directory: {folder}" in out
    # Evaluation-only logs parse with or without --test-log (MaPLe #12: "Nothing found").
    test_folder = tree / "base2new/test_new/eurosat/shots_16/MaPLe" / MAPLE
    for flags in ((), ("--test-log",)):
        _, out = run_main(test_folder, *flags)
        assert "* accuracy: 62.00% +- 2.00%" in out


def test_classic_ci95_and_multi_exp(tree, tmp_path):
    _, out = run_main(tree / "base2new/train_base/eurosat/shots_16/BMIP" / BMIP, "--ci95")
    assert f"* accuracy: 92.00% +- {T_975[2] * 2 / math.sqrt(3):.2f}%" in out
    for experiment, accuracies in (("exp-1", (80, 84)), ("exp-2", (90, 91, 92))):
        for seed, accuracy in enumerate(accuracies, start=1):
            write_training_log(tmp_path / experiment / f"seed{seed}", accuracy)
    _, out = run_main(tmp_path, "--multi-exp")
    assert "Average performance" in out
    assert f"* accuracy: {(82 + 91) / 2:.2f}%" in out


def test_nothing_found_is_a_message_not_a_crash(tmp_path):
    returncode, out = run_main(tmp_path)
    assert returncode == 1 and "Nothing found" in out


def test_hm_of_seeds_that_do_not_overlap(tmp_path):
    """Base from seed 1 only, new from seed 2 only: no seed has both, so no HM."""
    write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", BMIP, 1), 80.0)
    write_results(b2n_dir(tmp_path, "test_new", "eurosat", "BMIP", BMIP, 2), 60.0)
    returncode, out = run_main(tmp_path)
    assert returncode == 0
    [row] = [line for line in out.splitlines() if line.startswith("EuroSAT")]
    assert row.split()[-1] == "—"  # the HM column
    assert "BMIP · EuroSAT · base: missing seed(s) 2" in out


def test_hm_pairs_base_and_new_of_the_same_seeds(tables, tree):
    """DTD: base of seeds 1-3 (60, 62, 64), new of seeds 1-2 (50, 52): the HM uses seeds 1-2."""
    cell = tables["base2new"].cells[("BMIP", "DescribableTextures", "HM")]
    assert cell.mean == pytest.approx(hm(61, 51))
    assert cell.std == pytest.approx(abs(hm(60, 50) - hm(62, 52)) / 2)
    _, out = run_main(tree)
    assert f"{hm(61, 51):.2f} ± {abs(hm(60, 50) - hm(62, 52)) / 2:.2f} (2/3)" in out
    assert ("HM cells: the HM of the mean base and the mean new accuracy over the seeds that "
            "have both (their count in brackets); ± over those seeds' HMs.") in out


def test_ablation_config_compares_with_table_5(tmp_path):
    config = "BMIP_ctx2_dp9_lr2_add"
    write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", config, 1), 80.0)
    write_results(b2n_dir(tmp_path, "test_new", "eurosat", "BMIP", config, 1), 60.0)
    write_results(b2n_dir(tmp_path, "test_all", "eurosat", "BMIP", config, 1), 50.0)
    write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", BMIP, 1), 70.0)
    _, out = run_main(tmp_path, "--paper")
    assert "BMIP (Addition) HM" in out and "BMIP HM" in out  # the paper's name of the ablation
    # Table 5 (Addition): HM 78.40, Acc 71.42 as 11-dataset averages of the open-world table.
    assert f"{hm(80, 60):.2f} (1/11 datasets) [paper 78.40, Δ —]" in out
    assert "50.00 (1/11 datasets) [paper 71.42, Δ —]" in out


def test_many_methods_print_one_row_per_dataset_and_method(tmp_path):
    configs = ("BMIP_ctx2_dp9_lr2_add", "BMIP_ctx2_dp9_lr2_attention", "BMIP_ctx2_dp9_lr2_joint",
               "BMIP_ctx2_dp9_lr2_per_layer_proj")
    for index, config in enumerate((BMIP, *configs)):
        write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", config, 1), 80.0 + index)
        write_results(b2n_dir(tmp_path, "test_new", "eurosat", "BMIP", config, 1), 60.0)
    _, out = run_main(tmp_path)
    lines = out.splitlines()
    assert lines[2].split() == ["Dataset", "Method", "base", "new", "HM"]
    rows = [line for line in lines if line.startswith("EuroSAT")]
    assert [re.split(r"\s{2,}", row)[1] for row in rows] == [
        "BMIP", "BMIP (Addition)", "BMIP (Attention)", "BMIP (Joint)",
        "BMIP/BMIP_ctx2_dp9_lr2_per_layer_proj"]
    assert rows[1].split()[3:5] == ["81.00", "±"]


def test_domain_generalisation_average_counts_a_missing_source(tmp_path):
    for target, accuracy in (("imagenetv2", 64.0), ("imagenet_a", 50.0)):
        write_results(xd_test_dir(tmp_path, target, "BMIP", BMIP_XD, 1), accuracy)
    table = parse_test_res.transfer_table(parse_test_res.find_runs(tmp_path), "dg", ())
    assert table.datasets[0] == "ImageNet (source)"
    average = table.cells[("BMIP", "Average", "accuracy")]
    assert (average.mean, len(average.datasets), average.datasets_expected) == (57.0, 2, 5)
    _, out = run_main(tmp_path)
    [row] = [line for line in out.splitlines() if line.startswith("BMIP")]
    assert row.split()[1] == "missing" and "57.00 (2/5 datasets)" in row
    assert "dg · BMIP · ImageNet (source) · accuracy: missing seed(s) 1" in out


def test_user_datasets_are_shown_but_not_averaged(tmp_path):
    for dataset, base in (("eurosat", 80.0), ("my_flowers", 40.0)):
        write_results(b2n_dir(tmp_path, "train_base", dataset, "BMIP", BMIP, 1), base)
        write_results(b2n_dir(tmp_path, "test_new", dataset, "BMIP", BMIP, 1), base - 20)
    table = parse_test_res.build_tables(parse_test_res.find_runs(tmp_path))[0]
    assert table.cells[("BMIP", "my_flowers", "base")].mean == 40.0
    average = table.cells[("BMIP", "Average", "base")]
    assert (average.mean, average.datasets, average.datasets_expected) == (80.0, ("EuroSAT",), 11)
    _, out = run_main(tmp_path, "--paper")
    assert "80.00 (1/11 datasets) [paper 83.47, Δ —]" in out
    assert "Not in the paper's datasets, so left out of the averages: my_flowers." in out


def test_multi_exp_on_a_single_experiment_says_to_drop_it(tree):
    folder = tree / "base2new/train_base/eurosat/shots_16/MaPLe" / MAPLE
    stderr = io.StringIO()
    returncode, out = run_main(folder, "--multi-exp", stderr=stderr)
    assert returncode == 2 and "missing" not in out
    assert "looks like a single experiment" in stderr.getvalue()
    assert "drop --multi-exp" in stderr.getvalue()


def test_a_closed_pipe_ends_quietly(tree):
    # The reader closes at once (like `| head` after its lines): writing fails with EPIPE.
    process = subprocess.Popen([sys.executable, str(REPO / "parse_test_res.py"), str(tree)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert stderr == ""


def test_released_weights_are_a_method_of_their_own(tmp_path):
    """reproduce.sh's <CFG>_released folders beside our MaPLe runs of the same config."""
    released = MAPLE + "_released"
    write_results(b2n_dir(tmp_path, "train_base", "eurosat", "MaPLe", MAPLE, 1), 80.0)
    write_results(b2n_dir(tmp_path, "test_new", "eurosat", "MaPLe", MAPLE, 1), 60.0)
    write_results(b2n_dir(tmp_path, "test_base", "eurosat", "MaPLe", released, 1), 90.0)
    write_results(b2n_dir(tmp_path, "test_new", "eurosat", "MaPLe", released, 1), 70.0)
    table = parse_test_res.build_tables(parse_test_res.find_runs(tmp_path))[0]
    assert table.methods == ["MaPLe", "MaPLe (released)"]
    assert table.cells[("MaPLe", "EuroSAT", "HM")].mean == pytest.approx(hm(80, 60))
    assert table.cells[("MaPLe (released)", "EuroSAT", "HM")].mean == pytest.approx(hm(90, 70))
    stderr = io.StringIO()
    _, out = run_main(tmp_path, "--paper", stderr=stderr)
    assert "MaPLe (released) HM" in out
    # Released weights are compared with the paper's numbers of their method (Table 1: 81.43).
    assert f"{hm(90, 70):.2f} ± 0.00 (1) [paper 81.43, Δ {hm(90, 70) - 81.43:+.2f}]" in out
    assert stderr.getvalue() == ""


def test_train_base_and_test_base_of_one_config_warn_once(tmp_path):
    """A tree where released weights were evaluated into the folders of a trained config."""
    folders = []
    for seed in (1, 2):
        folders.append(write_results(b2n_dir(tmp_path, "train_base", "eurosat", "MaPLe", MAPLE,
                                              seed), 80.0))
        folders.append(write_results(b2n_dir(tmp_path, "test_base", "eurosat", "MaPLe", MAPLE,
                                             seed), 90.0))
        write_results(b2n_dir(tmp_path, "test_new", "eurosat", "MaPLe", MAPLE, seed), 70.0)
    write_results(b2n_dir(tmp_path, "test_all", "eurosat", "MaPLe", MAPLE, 1), 50.0)
    stderr = io.StringIO()
    _, out = run_main(tmp_path, stderr=stderr)
    warning = stderr.getvalue()
    assert warning.count("warning:") == 1  # once, though two tables read base accuracies
    assert "train_base" in warning and "test_base" in warning
    assert [line.strip() for line in warning.splitlines()[1:]] == [str(f) for f in folders]
    assert f"{hm(90, 70):.2f} ± 0.00 (2)" in out  # the tables use test_base, as the warning says


def test_a_log_written_by_the_engine_parses_without_results_json(tmp_path):
    """A run of the CoOp / MaPLe codebases leaves log.txt only: its final test (after the line
    the engine prints when training ends) is read; the validation results printed each epoch
    before it are not."""
    run = b2n_dir(tmp_path / "output", "train_base", "eurosat", "EngineToyTrainer", "toy", 1)
    (tmp_path / "data").mkdir()
    try:
        train.main(["--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "EngineToyTrainer",
                    "--output-dir", str(run), "DATASET.NAME", "EngineToyColors",
                    "INPUT.SIZE", "(8, 8)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2",
                    "TEST.FINAL_MODEL", "best_val", "USE_CUDA", "False"])
    finally:
        close_logger()
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").unlink()
    log = (run / "log.txt").read_text()
    assert log.count("* accuracy:") == 3  # two validation passes, then the final test

    logged = round(results["accuracy"], 1)  # the log prints one decimal
    assert protocols.read_run_metrics(run)["accuracy"] == logged
    returncode, out = run_main(run.parent)
    assert returncode == 0 and f"file: {run / 'log.txt'}." in out
    assert f"* accuracy: {logged:.2f}% +- 0.00%" in out


def test_classic_form_names_the_file_it_read(tree):
    folder = tree / "base2new/train_base/eurosat/shots_16/BMIP" / BMIP
    _, out = run_main(folder)
    assert f"file: {folder / 'seed1' / 'results.json'}. accuracy: 90.00%." in out


def test_column_names_come_from_the_dataset_configs():
    assert protocols.display_name("dtd") == "DescribableTextures"
    # Users' own data by its own name (the example's DIR), not the registry's UserDataset.
    assert protocols.display_name("my_dataset_example") == "my_dataset"
    assert protocols.display_name("no_such_dataset") == "no_such_dataset"


def _identity(shots=16, clip="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
              overrides=None, model="epoch 5", **fields):
    return {"trainer": "BMIP", "config": BMIP, "shots": shots, "seed": 1, "source": "",
            "backbone": "ViT-B/16", "clip_sha256": clip, "overrides": overrides or {},
            "model": model, "tag": "", **fields}


def test_runs_of_other_settings_are_rows_of_their_own_never_averaged(tmp_path):
    """A 4-shot run filed under shots_16/ by an older version, and runs on other CLIP weights:
    each its own row, with columns for what differs; the contradiction listed."""
    for seed, clip in ((1, "a" * 64), (2, "b" * 64)):
        write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", BMIP, seed), 80.0 + seed,
                      identity=_identity(clip=clip, seed=seed))
    write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", BMIP, 3), 50.0, num_shots=4)
    _, out = run_main(tmp_path)
    header = next(line for line in out.splitlines() if line.startswith("Dataset"))
    assert header.split()[:4] == ["Dataset", "Method", "shots", "CLIP"]
    assert all(f"{value} ± 0.00 (1)" in out for value in ("81.00", "82.00", "50.00"))
    assert "81.50" not in out  # the two CLIP files are never averaged
    assert re.search(r"Conflicts:\n  \S+/shots_16/BMIP/\S+/seed3: its folder says shots 16, "
                     r"its results 4", out)
    document = json.loads(run_main(tmp_path, "--format", "json")[1])
    assert sorted(row["shots"] for row in document["records"]
                  if row["dataset"] == "EuroSAT" and row["metric"] == "base") == [4, 16, 16]


def test_paper_differences_only_in_the_papers_setting(tmp_path):
    paper_clip = _identity()["clip_sha256"]
    for config, identity in ((BMIP, _identity(clip=paper_clip)),
                             ("BMIP_ctx2_dp9_lr2_lr-0.5", _identity(overrides={"OPTIM.LR": 0.5}))):
        write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", config, 1), 90.0,
                      identity=identity)
        write_results(b2n_dir(tmp_path, "test_new", "eurosat", "BMIP", config, 1), 80.0,
                      identity=identity)
    _, out = run_main(tmp_path, "--paper")
    rows = [line for line in out.splitlines() if line.startswith("EuroSAT")]
    [paper] = [row for row in rows if "OPTIM.LR" not in row]
    [other] = [row for row in rows if "OPTIM.LR" in row]
    # Table 1, EuroSAT HM
    assert f"{hm(90, 80):.2f} ± 0.00 (1) [paper 86.10, Δ {hm(90, 80) - 86.10:+.2f}]" in paper
    assert "†" not in paper
    assert "[paper 86.10]" in other and "Δ" not in other and "†" in other
    assert "† not the paper's setting" in out


def test_a_failed_run_is_listed_with_its_error_and_is_no_seed(tmp_path):
    for seed in (1, 2):
        write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", BMIP, seed), 80.0)
    failed = b2n_dir(tmp_path, "train_base", "dtd", "BMIP", BMIP, 3)
    failed.mkdir(parents=True)
    (failed / "config.yaml").write_text("SEED: 3\n")
    (failed / "log.txt").write_text("Loading dataset\nerror: unknown config key OPTIM.LRR\n")
    _, out = run_main(tmp_path)
    assert "missing seed" not in out and "DescribableTextures" not in out
    assert f"Failed (not counted):\n  {failed}: error: unknown config key OPTIM.LRR" in out


@pytest.mark.parametrize("content, problem", [
    ('{"accuracy": 71.', "Expecting"),  # truncated
    ('{"accuracy": "71.2%"}', "its accuracy is '71.2%', not a percentage"),
    ("[71.2]", "not a JSON object"),
    ('{"accuracy": NaN}', "its accuracy is nan, not a percentage"),
    ('{"accuracy": Infinity}', "its accuracy is inf, not a percentage"),
    ('{"accuracy": 1e308}', "its accuracy is 1e+308, not a percentage"),
    ('{"accuracy": 80, "identity": [1, 2]}', "nothing: a non-dict identity counts as none"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
])
def test_an_unreadable_results_json_is_reported_and_skipped(tmp_path, content, problem):
    for seed, accuracy in ((1, 80.0), (2, 84.0)):
        write_results(b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", BMIP, seed), accuracy)
    broken = b2n_dir(tmp_path, "train_base", "eurosat", "BMIP", BMIP, 3)
    write_results(broken, 0.0)
    (broken / "results.json").write_text(content)
    errors = io.StringIO()
    returncode, out = run_main(tmp_path, stderr=errors)
    if problem.startswith("nothing"):  # readable, with an identity that is no record
        assert returncode == 0 and "Traceback" not in errors.getvalue()
        return
    assert returncode == 0 and "82.00" in out  # the two readable seeds
    assert f"warning: {broken / 'results.json'} is unreadable (" in errors.getvalue()
    assert problem in errors.getvalue() and "Traceback" not in errors.getvalue()
    _, out = run_main(broken.parent)  # the classic form too
    assert "* accuracy: 82.00% +- 2.00%" in out and f"missing: {broken}" in out
