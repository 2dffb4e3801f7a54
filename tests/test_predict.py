"""The inference helper (trainers/predict.py, predict.py): a BMIP model trained for one epoch by
train.py on a tiny EuroSAT predicts, for the dataset's test images and class names, the logits of
the trainer's own evaluation path (DataManager, test loader, model_inference); any other class
list works (a class's logits do not depend on the others); images are preprocessed as
clip.load's preprocess does; upstream MaPLe-format checkpoints load; a missing image is named."""
import csv
import io
import json

import pytest
import torch
from PIL import Image

import clip
import train
import trainers
from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY, build_trainer
from tests.helpers.datasets import make_eurosat
from tests.helpers.trainers import (fp16_exact_values, run_script, run_train_py, tiny_opts,
                                    train_py_args, write_checkpoint, write_tiny_clip)
from trainers.predict import PredictorError, check_classnames, load_predictor

CONFIG_FILE = "BMIP/BMIP_ctx2_dp9_lr2.yaml"
CONFIG = f"configs/trainers/{CONFIG_FILE}"
MODEL_NAME = "MultiModalPromptLearner"
TRAINING = ["TRAINER.BMIP.PROMPT_DEPTH", "3", "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2"]


def bmip_opts(clip_file):
    return tiny_opts(clip_file, "TRAINER.BMIP.PROMPT_DEPTH", "3")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch BMIP run of train.py on a tiny EuroSAT (4 classes, 3 test images each)."""
    root = tmp_path_factory.mktemp("predict")
    make_eurosat(root / "data", n_classes=4, n_train=4, n_val=2, n_test=3)
    clip_file = write_tiny_clip(root / "tiny-vit.pt")
    run_train_py("BMIP", CONFIG_FILE, root / "data", clip_file, root / "train", overrides=TRAINING)
    return root, clip_file


@pytest.fixture(scope="module")
def reference(run):
    """(image paths, class names, logits) of the trainer built by train.py's own config set-up
    on the dataset, loaded with load_model and run over its test loader."""
    root, clip_file = run
    cfg = train.setup_cfg(train.build_parser().parse_args(
        train_py_args("BMIP", CONFIG_FILE, root / "data", clip_file, root / "reference",
                      overrides=TRAINING)))
    trainer = build_trainer(cfg)
    trainer.load_model(str(root / "train"))
    trainer.set_model_mode("eval")
    paths, logits = [], []
    with torch.no_grad():
        for batch in trainer.test_loader:
            paths += batch["impath"]
            logits.append(trainer.model_inference(batch["img"]))
    return paths, trainer.dm.dataset.classnames, torch.cat(logits)


def predictor_for(run, classnames, **kwargs):
    root, clip_file = run
    return load_predictor(CONFIG, str(root / "train"), "BMIP", classnames,
                          opts=bmip_opts(clip_file), **kwargs)


def test_the_dataset_classes_give_the_logits_of_the_trainers_evaluation(run, reference):
    paths, classnames, expected = reference
    assert len(paths) == 12 and len(classnames) == 4
    predictor = predictor_for(run, classnames)
    torch.testing.assert_close(predictor.logits(paths), expected, rtol=1e-5, atol=1e-5)
    names, probabilities = predictor.predict(paths)
    assert names == [classnames[i] for i in expected.argmax(dim=1).tolist()]
    torch.testing.assert_close(probabilities, expected.softmax(dim=1))


def test_any_class_list_works_and_a_class_keeps_its_logits(run, reference):
    paths, classnames, expected = reference
    mine = ["a parking lot", classnames[3], classnames[1]]
    predictor = predictor_for(run, mine, device="cpu")
    logits = predictor.logits(paths)
    assert logits.shape == (12, 3)
    torch.testing.assert_close(logits[:, 1:], expected[:, [3, 1]], rtol=1e-5, atol=1e-5)
    names, probabilities = predictor.predict([Image.open(paths[0]), paths[1]])
    torch.testing.assert_close(probabilities, logits[:2].softmax(dim=1))
    assert set(names) <= set(mine)


def test_images_are_preprocessed_like_clip_load(run):
    predictor = predictor_for(run, ["forest", "river"])
    _, clip_preprocess = clip.load(str(run[1]))
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (45, 70, 3), generator=generator, dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())  # not square: the resize and the crop both matter
    torch.testing.assert_close(predictor.preprocess(image), clip_preprocess(image))


def test_an_upstream_maple_format_checkpoint_predicts_like_ours(run, reference, tmp_path):
    """MaPLe's codebase saves the whole model in fp16 with class-name buffers of its own class
    list; the predictor loads it, through the trainer's load_model, for another class list."""
    paths, classnames, _ = reference
    ours = torch.load(run[0] / "train" / MODEL_NAME / "model.pth.tar-1", weights_only=True)
    prompts = fp16_exact_values(ours["state_dict"], seed=3)
    upstream = {key: value.half() for key, value in prompts.items()}
    upstream["prompt_learner.token_prefix"] = torch.zeros(7, 1, 32).half()
    upstream["prompt_learner.token_suffix"] = torch.zeros(7, 74, 32).half()
    for name, state_dict in (("ours", prompts), ("upstream", upstream)):
        write_checkpoint(tmp_path / name, MODEL_NAME, state_dict, 5)

    root, clip_file = run
    logits = [load_predictor(CONFIG, str(tmp_path / name), "BMIP", classnames[:3], load_epoch=5,
                             opts=bmip_opts(clip_file)).logits(paths)
              for name in ("ours", "upstream")]
    torch.testing.assert_close(logits[0], logits[1])
    trained = predictor_for(run, classnames[:3]).logits(paths)
    assert not torch.allclose(logits[0], trained, atol=1e-3)


def test_a_missing_image_is_named(run, reference):
    predictor = predictor_for(run, ["forest", "river"])
    missing = str(run[0] / "no_such_photo.jpg")
    with pytest.raises(FileNotFoundError, match="no_such_photo.jpg"):
        predictor.predict([reference[0][0], missing])


def run_cli(run, *args):
    root, clip_file = run
    return run_script("predict.py", "--trainer", "BMIP", "--model-dir", root / "train",
                      "--backbone", clip_file, *args)


def test_the_command_line_prints_the_top_classes(run, reference, tmp_path):
    paths, classnames, expected = reference
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text(f"{classnames[2]}\n\n  {classnames[0]}  \n")
    # No --config-file: the run's config.yaml; trailing KEY VALUE overrides after the images.
    result = run_cli(run, "--topk", "2", "--classnames", classnames[1], "--classnames-file",
                     str(classes_file), "--", paths[0], paths[4], *bmip_opts(run[1])[2:])
    assert result.returncode == 0, result.stderr[-3000:]
    mine = [classnames[1], classnames[2], classnames[0]]
    probabilities = expected[[0, 4]][:, [1, 2, 0]].softmax(dim=1)
    lines = []
    for path, row in zip((paths[0], paths[4]), probabilities):
        values, indices = row.topk(2)
        lines.append(path)
        lines += [f"  {value:7.2%}  {mine[index]}" for value, index in
                  zip(values.tolist(), indices.tolist())]
    assert result.stdout.splitlines() == lines


def test_the_command_line_names_a_missing_image(run):
    result = run_cli(run, "--classnames", "forest", "river", "--", "no_such_photo.jpg")
    assert result.returncode != 0
    assert 'image not found: "no_such_photo.jpg"' in result.stderr


def test_an_unknown_trainer_is_a_config_error_naming_the_trainers(run, tmp_path):
    # A folder without config.yaml (e.g. checkpoints from the CoOp / MaPLe codebases).
    with pytest.raises(ConfigError, match=r'Unknown trainer "BMP" .*Registered trainers: .*BMIP'):
        load_predictor(CONFIG, str(tmp_path), "BMP", ["forest"], opts=bmip_opts(run[1]))


def test_the_trainer_comes_from_the_run_and_another_one_is_refused(run, tmp_path):
    with pytest.raises(PredictorError, match=r'trainer MaPLe asked for \(--trainer\), but the run '
                                             r'in ".*train" was trained by BMIP'):
        load_predictor(None, str(run[0] / "train"), "MaPLe", ["forest"], opts=bmip_opts(run[1]))
    with pytest.raises(PredictorError, match=r"no trainer given, and no config.yaml .* \(--trainer\)"):
        load_predictor(CONFIG, str(tmp_path), None, ["forest"], opts=bmip_opts(run[1]))
    predictor = load_predictor(None, str(run[0] / "train"), None, ["forest", "river"],
                               opts=bmip_opts(run[1]))
    assert predictor.trainer.cfg.TRAINER.NAME == "BMIP"


def test_the_command_line_without_trainer_writes_json(run, reference):
    """No --trainer, no --config-file: both from the run; --format json holds the top-k classes
    and their probabilities for each image."""
    paths, classnames, expected = reference
    root, clip_file = run
    result = run_script("predict.py", "--model-dir", root / "train", "--backbone", clip_file,
                        "--format", "json", "--topk", "2", "--classnames", *classnames, "--",
                        paths[1], *bmip_opts(clip_file)[2:])
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json.loads(result.stdout)
    values, indices = expected[1].softmax(dim=0).topk(2)
    assert record["image"] == paths[1]
    assert [p["class"] for p in record["predictions"]] == [classnames[i] for i in indices.tolist()]
    assert [p["probability"] for p in record["predictions"]] == pytest.approx(values.tolist(),
                                                                             abs=1e-5)


def test_csv_and_json_hold_the_text_output_values():
    import predict

    probabilities = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    names = ["cat", "dog, small", "bird"]
    out = io.StringIO()
    predict.write_predictions(out, ["a.jpg", "b.jpg"], probabilities, names, 2, "csv")
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [["image", "rank", "class", "probability"],
                    ["a.jpg", "1", "dog, small", "0.700000"], ["a.jpg", "2", "bird", "0.200000"],
                    ["b.jpg", "1", "cat", "0.500000"], ["b.jpg", "2", "bird", "0.300000"]]
    out = io.StringIO()
    predict.write_predictions(out, ["a.jpg"], probabilities[:1], names, 1, "json")
    assert json.loads(out.getvalue()) == [
        {"image": "a.jpg", "predictions": [{"class": "dog, small", "probability": pytest.approx(0.7)}]}]


def test_the_predictor_module_is_not_imported_as_a_trainer():
    assert "trainers.predict" not in [module.__name__ for module in trainers.MODULES]
    assert "BMIP" in TRAINER_REGISTRY.registered_names()


@pytest.mark.parametrize("classnames, message", [
    (["", "forest"], "an empty class name was given: every class needs a name"),
    (["forest", "  "], "an empty class name was given: every class needs a name"),
    (["sea_lake", "Sea Lake"], "class names 'sea_lake' / 'Sea Lake' make the same prompt for CLIP"),
])
def test_empty_or_colliding_class_names_are_refused(classnames, message):
    with pytest.raises(PredictorError, match=message):
        check_classnames(classnames)


def test_the_command_line_refuses_an_empty_class_name_in_one_line(run, reference):
    paths, _, _ = reference
    result = run_cli(run, "--classnames", "", "forest", "--", paths[0])
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr == "error: an empty class name was given: every class needs a name\n"
