"""configs/published.json: the SHA-256 of every trainer config as published, which runs record
themselves against (a row of an edited config file is marked as such in the tables)."""
import hashlib
import json

from scripts import publish_configs


def test_the_manifest_matches_the_config_files():
    assert publish_configs.main(["--check"]) == 0, (
        "a trainer config changed: run `python -m scripts.publish_configs`")


def test_check_names_an_edited_file_and_writing_updates_it(tmp_path, monkeypatch, capsys):
    configs = tmp_path / "configs" / "trainers" / "CoOp"
    configs.mkdir(parents=True)
    config = configs / "mine.yaml"
    config.write_text("OPTIM:\n  LR: 0.002\n")
    monkeypatch.setattr(publish_configs, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(publish_configs, "TRAINER_CONFIGS", tmp_path / "configs" / "trainers")
    monkeypatch.setattr(publish_configs, "MANIFEST", tmp_path / "configs" / "published.json")
    assert publish_configs.main([]) == 0
    manifest = json.loads((tmp_path / "configs" / "published.json").read_text())
    assert manifest == {"configs/trainers/CoOp/mine.yaml":
                        hashlib.sha256(config.read_bytes()).hexdigest()}
    assert publish_configs.main(["--check"]) == 0
    config.write_text("OPTIM:\n  LR: 0.05\n")
    assert publish_configs.main(["--check"]) == 1
    assert "configs/trainers/CoOp/mine.yaml" in capsys.readouterr().err
