"""configs/paper_results.json: the paper's numbers, each with its table.

Spot values are copied here by hand from the paper's tables; the internal sums check that
columns were not shifted; the full comparison with the project's transcription source runs
where that file is present.
"""
import json
from pathlib import Path

import pytest

import parse_test_res

PAPER_FILE = parse_test_res.PAPER_RESULTS
REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO.parent / "shared" / "paper_tables.json"  # beside the checkout, as in CI


@pytest.fixture(scope="module")
def index():
    return parse_test_res.load_paper_results().entries


def value(index, table, method, dataset, metric):
    entry = index[(table, method, dataset, metric)]
    return entry["mean"], entry.get("std")


def test_every_entry_names_its_table():
    document = json.loads(PAPER_FILE.read_text())
    tables = set(document["tables"])
    assert tables == {"Table 1", "README", "Table 2", "Table 3", "Table 4", "Table 5"}
    keys = [(e["table"], e["method"], e["dataset"], e["metric"]) for e in document["results"]]
    assert len(keys) == len(set(keys))
    assert all(e["table"] in tables and isinstance(e["mean"], float) for e in document["results"])


def test_spot_values(index):
    assert value(index, "Table 1", "BMIP", "EuroSAT", "HM") == (86.10, 1.58)
    assert value(index, "Table 1", "CoCoOp", "FGVCAircraft", "Acc") == (21.46, 7.42)
    assert value(index, "Table 1", "MaPLe", "Average", "HM") == (78.22, None)
    assert value(index, "README", "BMIP", "Average", "new") == (76.69, None)
    assert value(index, "Table 2", "BMIP", "EuroSAT", "accuracy") == (49.63, None)
    assert value(index, "Table 2", "CoOp", "ImageNet", "accuracy") == (71.51, None)
    assert value(index, "Table 3", "MaPLe", "ImageNetA", "accuracy") == (50.90, None)
    assert value(index, "Table 4", "PromptSRC+BMIP", "Average", "Acc") == (73.97, 0.43)
    assert value(index, "Table 5", "Joint", "Average", "HM") == (78.79, None)


TABLE2_TARGETS = ["Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
                  "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101"]
TABLE3_COLUMNS = ["ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]


TABLE1_DATASETS = ["ImageNet", *TABLE2_TARGETS]
# Printed averages that are not the mean of their rows (said in paper_results.json):
# (table, method, metric) -> the mean of the printed rows.
PRINTED_AVERAGE_DISCREPANCIES = {
    ("Table 2", "BMIP", "accuracy"): 66.461,
    ("Table 1", "MaPLe", "HM"): 77.822, ("Table 1", "MaPLe", "Acc"): 71.680,
    ("Table 1", "BMIP", "HM"): 78.845, ("Table 1", "BMIP", "Acc"): 72.547,
    ("README", "BMIP", "HM"): 79.936,
}


def printed_average(index, table, method, metric):
    return PRINTED_AVERAGE_DISCREPANCIES.get((table, method, metric),
                                             value(index, table, method, "Average", metric)[0])


@pytest.mark.parametrize("method", ["CLIP", "CoOp", "CoCoOp", "MaPLe", "BMIP"])
def test_averages_agree_with_their_columns(index, method):
    targets = [value(index, "Table 2", method, d, "accuracy")[0] for d in TABLE2_TARGETS]
    assert sum(targets) / 10 == pytest.approx(printed_average(index, "Table 2", method,
                                                              "accuracy"), abs=0.02)
    for metric in ("HM", "Acc"):
        rows = [value(index, "Table 1", method, d, metric)[0] for d in TABLE1_DATASETS]
        assert sum(rows) / 11 == pytest.approx(printed_average(index, "Table 1", method, metric),
                                               abs=0.01)
    columns = [value(index, "Table 3", method, d, "accuracy")[0] for d in TABLE3_COLUMNS]
    assert sum(columns) / 5 == pytest.approx(
        value(index, "Table 3", method, "Average", "accuracy")[0], abs=0.01)
    assert sum(columns[1:]) / 4 == pytest.approx(
        value(index, "Table 3", method, "OOD Average", "accuracy")[0], abs=0.01)
    base, new = (value(index, "README", method, "Average", m)[0] for m in ("base", "new"))
    assert 2 * base * new / (base + new) == pytest.approx(
        printed_average(index, "README", method, "HM"), abs=0.02)


@pytest.mark.skipif(not SOURCE.is_file(), reason="transcription source not present")
def test_matches_the_transcription_source(index):
    source = json.loads(SOURCE.read_text())
    expected = {}
    for dataset, methods in source["table1_openworld"].items():
        if dataset != "note":
            for method, cells in methods.items():
                for metric, cell in cells.items():
                    expected[("Table 1", method, "Average" if dataset == "average" else dataset,
                              metric)] = cell
    for method, cells in source["base_to_new_average_readme"].items():
        if method != "note":
            for metric, cell in cells.items():
                expected[("README", method, "Average", metric)] = cell
    for key, table in (("table2_cross_dataset", "Table 2"), ("table3_domain_generalization", "Table 3")):
        for method, row in source[key].items():
            if method not in ("columns", "note"):
                for column, cell in zip(source[key]["columns"], row):
                    expected[(table, method, column, "accuracy")] = cell
    for key, table in (("table4_combinations", "Table 4"), ("table5_aggregation", "Table 5")):
        for method, cells in source[key].items():
            if method != "note":
                for metric, cell in cells.items():
                    expected[(table, method, "Average", metric)] = cell
    assert set(index) == set(expected)
    for key, cell in expected.items():
        mean, std = cell if isinstance(cell, list) else (cell, None)
        assert (index[key]["mean"], index[key].get("std")) == (mean, std), key


def test_ablation_configs_map_to_table_5():
    paper = parse_test_res.load_paper_results()
    assert paper.method("BMIP", "BMIP_ctx2_dp9_lr2_add") == "Addition"
    assert paper.method("BMIP", "BMIP_ctx2_dp9_lr2") == "BMIP"
    assert paper.method("ZeroshotCLIP", "vit_b16_ep50") == "CLIP"
    assert paper.method("PromptSRC", "vit_b16_c2_ep20_batch4_4ctx_bmip") == "PromptSRC+BMIP"
    assert paper.method("CoPrompt", "coprompt_bmip") == "CoPrompt+BMIP"
    assert paper.method("MaPLe", "vit_b16_c2_ep5_batch4_8ctx") == "MaPLe-dagger"
    assert paper.method("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx") == "PromptSRC"
    for config in paper.method_of_config:
        assert list((REPO / "configs" / "trainers").glob(f"*/{config}.yaml")), config
