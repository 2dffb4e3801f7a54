"""scripts/demo_data.py writes what scripts/demo.sh runs on: the dataset folders the demo's
protocols read and a CLIP archive that clip.load reads, deep enough for prompt depth 9."""
import clip
from scripts.demo_data import write_demo_files


def test_demo_files(tmp_path):
    data, clip_file = write_demo_files(tmp_path)
    for folder in ("eurosat/2750", "imagenet/images/train", "imagenetv2", "imagenet-sketch",
                   "imagenet-adversarial", "imagenet-rendition"):
        assert (data / folder).is_dir(), folder
    model, _ = clip.load(str(clip_file), device="cpu")
    assert model.visual.input_resolution == 32
    assert len(model.visual.transformer.resblocks) == len(model.transformer.resblocks) == 12

