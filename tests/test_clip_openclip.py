"""open_clip's CLIP models as backbones (clip/openclip.py): converted into our CLIP, they compute
open_clip's own features and logits; every prompt trainer trains and evaluates on one given as a
`<model>/<checkpoint file>` name; a `<model>/<tag>` name goes through open_clip's download (its
hub function replaced by a local folder), and without the network says in one line which file
is missing and where; models of another structure are refused in one line.

The main case is a tiny open_clip config registered for the test (GELU, several heads, MLP
ratio 2, the trainers' tiny sizes); open_clip's ViT-B-16, ViT-B-16-quickgelu and ViT-B-32 are
checked with random weights on one image."""
import hashlib
import json
import os
import os.path as osp
import urllib.error

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clip
from clip import openclip
from clip.model import QuickGELU, convert_weights_to
from clip.pretrained import DownloadError, ModelFileError, clip_sha256
from dassl.engine import build_trainer
from tests.helpers import engine as toy
from tests.helpers.clip_files import make_vit_state_dict, write_clip_file
from tests.helpers.trainers import (TINY_SIZES, predictions, snapshot, tiny_clip,
                                    toy_trainer_cfg)
from trainers.zsclip import class_texts

TINY = "Tiny-ViT-test"
TINY_QUICKGELU = "Tiny-ViT-test-quickgelu"
TINY_CUSTOM_TEXT = "Tiny-ViT-test-custom-text"
TINY_CONFIG = {
    "embed_dim": TINY_SIZES["embed_dim"],
    "vision_cfg": {"image_size": TINY_SIZES["image_resolution"], "layers": 3, "width": 48,
                   "patch_size": TINY_SIZES["vision_patch_size"], "head_width": 16,
                   "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 3},
}
CONFIGS = {TINY: TINY_CONFIG, TINY_QUICKGELU: {**TINY_CONFIG, "quick_gelu": True},
           TINY_CUSTOM_TEXT: {**TINY_CONFIG, "custom_text": True}}
HUB_REPO = "test-org/tiny-clip"
TAG_MEAN, TAG_STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
TEXTS = ["a photo of a forest.", "a satellite photo of a highway next to a river"]


@pytest.fixture(autouse=True)
def tiny_configs(monkeypatch):
    """The tiny configs among open_clip's models, with tags on a (fake) hub and at an address."""
    for name, config in CONFIGS.items():
        monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, name, config)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {
        "hubtag": {"hf_hub": HUB_REPO + "/", "mean": TAG_MEAN, "std": TAG_STD},
        "urltag": {"url": "https://example.invalid/weights/tiny-vit-test.pt"},
        "quicktag": {"hf_hub": HUB_REPO + "/", "quick_gelu": True}})


def open_clip_model(name, seed=0):
    """open_clip's own model `name`, random weights (the tiny ones perturbed further, so that
    no LayerNorm or bias keeps its neutral initial value), fp32, eval mode."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None).eval()
    if name in CONFIGS:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def reference(model, images, tokens):
    """open_clip's forward: normalised image and text features and the image-to-text logits."""
    with torch.no_grad():
        image_features, text_features, scale = model(images, tokens)[:3]
    return image_features, text_features, scale * image_features @ text_features.t()


def ours(model, images, tokens, forward=True):
    """Our model's normalised features and logits: from its `forward` (the tiny models), or
    from the features and its logit scale (the large ones: their image tower runs once)."""
    with torch.no_grad():
        image_features = F.normalize(model.encode_image(images).float(), dim=-1)
        text_features = F.normalize(model.encode_text(tokens).float(), dim=-1)
        if forward:
            logits, _ = model(images, tokens)
        else:
            logits = model.logit_scale.exp() * image_features @ text_features.t()
    return image_features, text_features, logits.float()


def write_open_clip_file(path, model, training_checkpoint=False):
    """`model`'s weights as open_clip writes them: the state dict (open_clip_pytorch_model.bin),
    or a training checkpoint (epoch, DistributedDataParallel's "module." keys)."""
    state_dict = model.state_dict()
    if training_checkpoint:
        state_dict = {"epoch": 3, "name": "run",
                      "state_dict": {f"module.{key}": value for key, value in state_dict.items()}}
    torch.save(state_dict, path)
    return str(path)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("name", [TINY, TINY_QUICKGELU, TINY_CUSTOM_TEXT, "ViT-B-16",
                                  "ViT-B-16-quickgelu", "ViT-B-32"])
def test_the_converted_model_computes_open_clips_features_and_logits(name):
    reference_model = open_clip_model(name)
    model = openclip.build_model(name, reference_model.state_dict())
    size = model.visual.input_resolution
    tiny = name in CONFIGS
    images = torch.randn(3 if tiny else 1, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = clip.tokenize(TEXTS)
    assert torch.equal(tokens, open_clip.get_tokenizer(name)(TEXTS))
    for got, expected in zip(ours(model, images, tokens, forward=tiny),
                             reference(reference_model, images, tokens)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    quick = name.endswith("-quickgelu")
    assert model.activation == ("quick_gelu" if quick else "gelu")
    activations = {type(block.mlp.gelu) for block in model.transformer.resblocks}
    assert activations == {QuickGELU if quick else nn.GELU}


def supported_models():
    names = []
    for name in open_clip.list_models():
        try:
            openclip.model_config(name)
        except ModelFileError:
            continue
        names.append(name)
    return names


def test_every_supported_model_has_open_clips_keys_shapes_and_heads():
    """Built on the meta device (no memory, no weights): the structural check accepts the
    families the README lists, and for each our CLIP's state dict has the keys and shapes of
    open_clip's (converted), its towers open_clip's heads."""
    names = supported_models()
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-bigG-14",
            "ViT-B-16-quickgelu", "ViT-L-14-quickgelu", "ViT-H-14-378-quickgelu"} <= set(names)
    for name in names:
        with torch.device("meta"):
            reference_model = open_clip.create_model(name, pretrained=None, device="meta")
            model = openclip.CLIP(**openclip.architecture(openclip.model_config(name)))
        expected = {key: value.shape for key, value in
                    openclip.convert_state_dict(reference_model.state_dict()).items()}
        assert {key: value.shape for key, value in model.state_dict().items()} == expected, name
        reference_heads = [reference_model.visual.transformer.resblocks[0].attn.num_heads,
                           getattr(reference_model, "text", reference_model)
                           .transformer.resblocks[0].attn.num_heads]
        heads = [model.visual.transformer.resblocks[0].attn.num_heads,
                 model.transformer.resblocks[0].attn.num_heads]
        assert heads == reference_heads, name


def test_bf16_weights_compute_open_clips_results_within_bf16_precision():
    reference_model = open_clip_model(TINY)
    model = convert_weights_to(openclip.build_model(TINY, reference_model.state_dict()),
                               torch.bfloat16)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = clip.tokenize(TEXTS)
    expected = reference(reference_model, images, tokens)
    got = ours(model, images, tokens)
    assert model.visual.conv1.weight.dtype == torch.bfloat16
    for got_one, expected_one in zip(got[:2], expected[:2]):
        torch.testing.assert_close(got_one, expected_one, atol=3e-2, rtol=0)
    torch.testing.assert_close(got[2], expected[2], atol=0.5, rtol=3e-2)  # logit scale ~14


def test_openai_models_keep_quickgelu_and_four_times_wide_mlps():
    model = tiny_clip()
    assert model.activation == "quick_gelu"
    for block in [*model.transformer.resblocks, *model.visual.transformer.resblocks]:
        assert type(block.mlp.gelu) is QuickGELU
        assert block.mlp.c_fc.out_features == 4 * block.mlp.c_fc.in_features


# ---------------------------------------------------------------------------------------------
# Every trainer on an open_clip checkpoint file


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(open_clip.factory._MODEL_CONFIGS, TINY, TINY_CONFIG)
        model = open_clip_model(TINY)
    return write_open_clip_file(folder / "open_clip_pytorch_model.bin", model)


def backbone(path):
    return f"{TINY}/{path}"


# trainer, config file, overrides fitting the tiny 3-layer towers; one step (12 toy images)
TRAINER_CASES = {
    "CoOp": ("CoOp", "CoOp/vit_b16_ep50.yaml", ["TRAINER.COOP.N_CTX", 4]),
    "CoCoOp": ("CoCoOp", "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", []),
    "MaPLe": ("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", ["TRAINER.MAPLE.PROMPT_DEPTH", 2]),
    "IVLP": ("IVLP", "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
             ["TRAINER.IVLP.PROMPT_DEPTH_VISION", 3, "TRAINER.IVLP.PROMPT_DEPTH_TEXT", 2]),
    "VPT": ("VPT", "VPT/vit_b16_c2_ep5_batch4_4.yaml", ["TRAINER.VPT.PROMPT_DEPTH_VISION", 2]),
    "BMIP": ("BMIP", "BMIP/BMIP_ctx2_dp9_lr2.yaml", ["TRAINER.BMIP.PROMPT_DEPTH", 3]),
    "PromptSRC": ("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
                  ["TRAINER.IVLP.PROMPT_DEPTH_VISION", 2, "TRAINER.IVLP.PROMPT_DEPTH_TEXT", 2,
                   "TRAINER.PROMPTSRC.GPA_MEAN", 1, "TRAINER.PROMPTSRC.GPA_STD", 1]),
    "CoPrompt": ("CoPrompt", "CoPrompt/coprompt.yaml", ["TRAINER.MAPLE.PROMPT_DEPTH", 2]),
}


def trainer_cfg(case, clip_name, tmp_path, *opts):
    trainer, config_file, overrides = TRAINER_CASES[case]
    if trainer == "CoPrompt":
        descriptions = tmp_path / "descriptions.json"
        descriptions.write_text(json.dumps({name: [f"a {name} thing."] for name in toy.TOY_CLASSES}))
        overrides = [*overrides, "TRAINER.COPROMPT.DESCRIPTIONS", str(descriptions)]
    return toy_trainer_cfg(trainer, config_file, clip_name, tmp_path, tmp_path / "out",
                           *overrides, "DATALOADER.TRAIN_X.BATCH_SIZE", 12,
                           "DATALOADER.TEST.BATCH_SIZE", 12, *opts)


@pytest.mark.parametrize("case", list(TRAINER_CASES))
def test_each_trainer_trains_a_step_and_reloads_exactly_on_an_open_clip_file(
        case, checkpoint_file, tmp_path):
    cfg = trainer_cfg(case, backbone(checkpoint_file), tmp_path)
    trainer = build_trainer(cfg)
    assert any(isinstance(module, nn.GELU) for module in trainer.model.modules())
    assert not any(isinstance(module, QuickGELU) for module in trainer.model.modules())
    before = snapshot(trainer.model)
    trainer.train()
    after = snapshot(trainer.model)
    learner = [key for key in before if key.startswith("prompt_learner.")]
    assert any(not torch.equal(before[key], after[key]) for key in learner)
    assert all(torch.equal(before[key], after[key]) for key in before if key not in learner)
    logits = predictions(trainer)
    assert logits.shape == (12, len(toy.TOY_CLASSES)) and torch.isfinite(logits).all()

    fresh = build_trainer(cfg)
    name = trainer.get_model_names()[0]
    epochs = [f for f in os.listdir(osp.join(cfg.OUTPUT_DIR, name)) if f.startswith("model.pth")]
    fresh.load_model(cfg.OUTPUT_DIR, epoch=int(epochs[0].rsplit("-", 1)[1]))
    assert torch.equal(predictions(fresh), logits)


def test_zero_shot_clip_on_an_open_clip_training_checkpoint_scores_as_open_clip(tmp_path):
    reference_model = open_clip_model(TINY, seed=4)
    path = write_open_clip_file(tmp_path / "epoch_3.pt", reference_model, training_checkpoint=True)
    cfg = toy_trainer_cfg("ZeroshotCLIP", "CoOp/vit_b16_ep50.yaml", backbone(path), tmp_path,
                          tmp_path / "out", "DATALOADER.TEST.BATCH_SIZE", 12)
    trainer = build_trainer(cfg)
    logits = predictions(trainer)
    images = torch.cat([trainer.parse_batch_test(batch)[0] for batch in trainer.test_loader])
    texts = class_texts(trainer.templates()[0], trainer.dm.dataset.classnames)
    expected = reference(reference_model, images, open_clip.get_tokenizer(TINY)(texts))[2]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Names, open_clip's download, identity, the image settings


class FakeHub:
    """open_clip's `hf_hub_download` over a local folder: `published` files of the repository
    are copied into `cache` when asked for, unless `online` is False; `local_files_only` reads
    the cache alone."""

    def __init__(self, root, published):
        self.cache, self.published, self.online, self.calls = root / "hub-cache", published, True, []

    def __call__(self, repo_id, filename, revision=None, cache_dir=None, local_files_only=False,
                 **kwargs):
        self.calls.append((repo_id, filename, local_files_only))
        cached = self.cache / repo_id / filename
        if cached.is_file():
            return str(cached)
        if local_files_only or not self.online:
            raise FileNotFoundError(
                "An error happened while trying to locate the file on the Hub and we cannot\n"
                "find the requested files in the local cache.")
        if (repo_id, filename) not in self.published:
            raise FileNotFoundError(f"404: {filename} is not in {repo_id}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(open(self.published[repo_id, filename], "rb").read())
        return str(cached)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    reference_model = open_clip_model(TINY, seed=5)
    path = write_open_clip_file(tmp_path / "published.bin", reference_model)
    fake = FakeHub(tmp_path, {(HUB_REPO, "open_clip_pytorch_model.bin"): path})
    fake.reference_model = reference_model
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", fake)
    return fake


def test_a_tag_is_downloaded_by_open_clip_and_fingerprinted_by_its_file(hub, tmp_path):
    name = f"{TINY}/hubtag"
    assert clip_sha256(name, tmp_path / "sha") is None  # nothing downloaded yet, nothing fetched
    model, preprocess = clip.load(name)
    assert (HUB_REPO, "open_clip_model.safetensors", False) in hub.calls  # open_clip's order
    downloaded = hub.cache / HUB_REPO / "open_clip_pytorch_model.bin"
    assert downloaded.is_file()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    tokens = clip.tokenize(TEXTS)
    for got, expected in zip(ours(model, images, tokens),
                             reference(hub.reference_model, images, tokens)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    normalize = preprocess.transforms[-1]
    assert (tuple(normalize.mean), tuple(normalize.std)) == (TAG_MEAN, TAG_STD)
    assert clip_sha256(name, tmp_path / "sha") == sha256(downloaded)

    hub.online = False  # the cached file is enough, taken without asking the hub
    hub.calls.clear()
    model, _ = clip.load(name)
    assert model.activation == "gelu"
    assert hub.calls and all(local_only for _, _, local_only in hub.calls)


def test_offline_without_the_file_one_line_names_the_file_and_the_cache(hub):
    hub.online = False
    with pytest.raises(DownloadError) as error:
        clip.load(f"{TINY}/hubtag")
    message = str(error.value)
    assert "\n" not in message
    assert f"open_clip_pytorch_model.bin of the Hugging Face repository {HUB_REPO}" in message
    assert "models--test-org--tiny-clip" in message
    assert f"MODEL.BACKBONE.NAME {TINY}/<path of the file>" in message


def test_a_release_address_is_read_from_the_cache_folder_or_named_offline(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(open_clip.pretrained.urllib.request, "urlopen", offline)
    name = f"{TINY}/urltag"
    with pytest.raises(DownloadError) as error:
        clip.load(name, download_root=str(tmp_path))
    target = osp.join(str(tmp_path), "tiny-vit-test.pt")
    assert "\n" not in str(error.value) and f"(saved as {target})" in str(error.value)

    reference_model = open_clip_model(TINY, seed=6)
    write_open_clip_file(target, reference_model)
    model, _ = clip.load(name, download_root=str(tmp_path))
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(ours(model, images, clip.tokenize(TEXTS))[2],
                               reference(reference_model, images, clip.tokenize(TEXTS))[2],
                               atol=1e-5, rtol=1e-5)
    assert clip_sha256(name, str(tmp_path)) == sha256(target)


def test_a_checkpoint_file_name_is_fingerprinted_by_the_file(checkpoint_file, tmp_path):
    assert clip_sha256(backbone(checkpoint_file), tmp_path) == sha256(checkpoint_file)


@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP/webli", "coca_ViT-B-32/laion2b_s13b_b90k",
                                  "EVA02-B-16/merged2b_s8b_b131k", "RN50/yfcc15m",
                                  "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"])
def test_models_of_another_structure_are_refused_in_one_line_before_any_download(
        name, monkeypatch):
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", pytest.fail)
    with pytest.raises(ModelFileError) as error:
        clip.load(name)
    message = str(error.value)
    assert "\n" not in message and f"open_clip model {name.split('/')[0]} is not supported" in message
    assert "supported are open_clip's ViT CLIP models with OpenAI's architecture" in message
    if "SigLIP" in name:
        assert "(a SigLIP model: its config has init_logit_bias)" in message


def test_a_tag_needing_the_other_activation_and_an_unknown_tag_are_refused(monkeypatch):
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", pytest.fail)
    with pytest.raises(ModelFileError, match="trained with QuickGELU: use ViT-B-16-quickgelu/dfn2b"):
        clip.load("ViT-B-16/dfn2b")
    with pytest.raises(ModelFileError, match=f"trained with QuickGELU: use {TINY_QUICKGELU}/quicktag"):
        clip.load(f"{TINY}/quicktag")
    with pytest.raises(ModelFileError, match="neither a pretrained tag of open_clip's ViT-B-16 "
                                             r"\(openai, laion400m_e31, .*laion2b_s34b_b88k"):
        clip.load("ViT-B-16/laion2b")
    with pytest.raises(ModelFileError, match="nor an open_clip name <model>/<pretrained tag>"):
        clip.load("ViT-Z-99/laion2b")


def test_a_file_of_another_model_is_one_line(checkpoint_file):
    with pytest.raises(ModelFileError) as error:
        clip.load(f"ViT-B-32/{checkpoint_file}")
    assert "\n" not in str(error.value) and "does not hold the weights of open_clip's ViT-B-32" in str(error.value)


def test_an_openai_torchscript_file_is_pointed_to_its_own_form(tmp_path):
    path = write_clip_file(tmp_path / "ViT-B-16.pt", make_vit_state_dict(), torchscript=True)
    with pytest.raises(ModelFileError, match="TorchScript archive .OpenAI's format.*as the path alone"):
        clip.load(f"ViT-B-32-quickgelu/{path}")


def test_openai_names_and_files_are_not_open_clip_names(checkpoint_file):
    assert openclip.parse_name("ViT-B/16") is None
    assert openclip.parse_name(checkpoint_file) is None
    assert openclip.parse_name("models/ViT-B-16.pt") is None
    assert openclip.parse_name("ViT-B-16/laion2b_s34b_b88k") == ("ViT-B-16", "laion2b_s34b_b88k")
    assert openclip.parse_name(backbone(checkpoint_file)) == (TINY, checkpoint_file)


def test_backbone_labels_for_tables():
    assert openclip.backbone_label("ViT-B/16") == "ViT-B/16"
    assert openclip.backbone_label("ViT-B-16/laion2b_s34b_b88k") == "ViT-B-16/laion2b_s34b_b88k"
    assert openclip.backbone_label("ViT-B-16//models/epoch_32.pt") == "ViT-B-16/epoch_32.pt"
    assert openclip.backbone_label("/models/ViT-B-16.pt") == "ViT-B-16.pt"


def test_the_tags_image_settings_go_into_input_unless_given_on_the_command_line():
    import trainers
    from trainers.predict import predictor_cfg

    cfg = trainers.default_cfg()
    opts = ["MODEL.BACKBONE.NAME", f"{TINY}/hubtag", "INPUT.PIXEL_STD", "[0.1, 0.1, 0.1]"]
    cfg.merge_from_list(opts)
    trainers.apply_backbone_input(cfg, opts)
    assert tuple(cfg.INPUT.SIZE) == (32, 32) and tuple(cfg.INPUT.PIXEL_MEAN) == TAG_MEAN
    assert list(cfg.INPUT.PIXEL_STD) == [0.1, 0.1, 0.1]

    config_file = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "configs",
                           "trainers", "CoOp", "vit_b16_ep50.yaml")
    cfg = predictor_cfg(config_file, "CoOp", ["MODEL.BACKBONE.NAME", f"{TINY}/urltag"])
    assert tuple(cfg.INPUT.SIZE) == (32, 32)
    assert tuple(cfg.INPUT.PIXEL_MEAN) == open_clip.constants.OPENAI_DATASET_MEAN
    cfg = predictor_cfg(config_file, "CoOp", ["MODEL.BACKBONE.NAME", "ViT-B/16"])
    assert tuple(cfg.INPUT.SIZE) == (224, 224)
