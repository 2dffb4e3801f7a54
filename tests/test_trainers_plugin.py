"""A trainer file written for the CoOp codebase on OpenAI's `clip` package runs here unchanged:
dropped among the trainers, it trains and evaluates through train.py, and its logits equal our
CoOp's with the same context vectors. A plugin file that fails to import is reported in one line
and does not take the other trainers down.

The plugin below is written for this test in the style of that codebase (load_clip_to_cpu through
clip._MODELS / clip._download, a sequence-first TextEncoder that leaves the causal mask to
CLIP, token_prefix / token_suffix buffers, PREC handling, its own load_model)."""
import hashlib
import os.path as osp
import textwrap

import pytest
import torch

import train
import trainers
from clip import pretrained
from dassl.engine import build_trainer
from dassl.utils import close_logger, read_json
from tests.helpers.coop import write_coop_clip
from tests.helpers.datasets import make_eurosat
from tests.helpers.http_server import serve_folder
from tests.helpers.trainers import predictions, train_py_args

N_CTX = 4
BACKBONE = "Tiny-ViT/8"

UPSTREAM_STYLE_TRAINER = textwrap.dedent('''
    import os.path as osp

    import torch
    import torch.nn as nn
    from torch.nn import functional as F

    from dassl.engine import TRAINER_REGISTRY, TrainerX
    from dassl.metrics import compute_accuracy
    from dassl.optim import build_lr_scheduler, build_optimizer
    from dassl.utils import load_checkpoint, load_pretrained_weights

    from clip import clip
    from clip.model import convert_weights
    from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer

    _tokenizer = _Tokenizer()


    def load_clip_to_cpu(cfg):
        url = clip._MODELS[cfg.MODEL.BACKBONE.NAME]
        model_path = clip._download(url)
        try:
            model = torch.jit.load(model_path, map_location="cpu").eval()
            state_dict = None
        except RuntimeError:
            state_dict = torch.load(model_path, map_location="cpu")
        return clip.build_model(state_dict or model.state_dict())


    class TextEncoder(nn.Module):
        def __init__(self, clip_model):
            super().__init__()
            self.transformer = clip_model.transformer
            self.positional_embedding = clip_model.positional_embedding
            self.ln_final = clip_model.ln_final
            self.text_projection = clip_model.text_projection
            self.dtype = clip_model.dtype

        def forward(self, prompts, tokenized_prompts):
            x = prompts + self.positional_embedding.type(self.dtype)
            x = x.permute(1, 0, 2)  # NLD -> LND
            x = self.transformer(x)
            x = x.permute(1, 0, 2)  # LND -> NLD
            x = self.ln_final(x).type(self.dtype)
            eot = tokenized_prompts.argmax(dim=-1)
            return x[torch.arange(x.shape[0]), eot] @ self.text_projection


    class PromptLearner(nn.Module):
        def __init__(self, cfg, classnames, clip_model):
            super().__init__()
            n_cls = len(classnames)
            n_ctx = cfg.TRAINER.COOP.N_CTX
            dtype = clip_model.dtype
            ctx_dim = clip_model.ln_final.weight.shape[0]
            assert cfg.INPUT.SIZE[0] == clip_model.visual.input_resolution
            ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)
            self.ctx = nn.Parameter(ctx_vectors)

            classnames = [name.replace("_", " ") for name in classnames]
            self.name_lens = [len(_tokenizer.encode(name)) for name in classnames]
            prompts = [prompt_prefix + " " + name + "." for name in classnames]
            tokenized_prompts = torch.cat([clip.tokenize(p) for p in prompts])
            with torch.no_grad():
                embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
            self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
            self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # CLS, EOS
            self.n_cls, self.n_ctx = n_cls, n_ctx
            self.tokenized_prompts = tokenized_prompts

        def forward(self):
            ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
            return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


    class CustomCLIP(nn.Module):
        def __init__(self, cfg, classnames, clip_model):
            super().__init__()
            self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
            self.tokenized_prompts = self.prompt_learner.tokenized_prompts
            self.image_encoder = clip_model.visual
            self.text_encoder = TextEncoder(clip_model)
            self.logit_scale = clip_model.logit_scale
            self.dtype = clip_model.dtype

        def forward(self, image):
            image_features = self.image_encoder(image.type(self.dtype))
            text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            return self.logit_scale.exp() * image_features @ text_features.t()


    @TRAINER_REGISTRY.register()
    class UpstreamStyleCoOp(TrainerX):
        def check_cfg(self, cfg):
            assert cfg.TRAINER.COOP.PREC in ["fp16", "fp32", "amp"]

        def build_model(self):
            cfg = self.cfg
            classnames = self.dm.dataset.classnames
            clip_model = load_clip_to_cpu(cfg)
            if cfg.TRAINER.COOP.PREC == "fp16":
                convert_weights(clip_model)
            else:
                clip_model.float()
            self.model = CustomCLIP(cfg, classnames, clip_model)
            for name, param in self.model.named_parameters():
                if "prompt_learner" not in name:
                    param.requires_grad_(False)
            if cfg.MODEL.INIT_WEIGHTS:
                load_pretrained_weights(self.model.prompt_learner, cfg.MODEL.INIT_WEIGHTS)
            self.model.to(self.device)
            self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
            self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
            self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)

        def forward_backward(self, batch):
            image, label = self.parse_batch_train(batch)
            output = self.model(image)
            loss = F.cross_entropy(output, label)
            self.model_backward_and_update(loss)
            summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
            if (self.batch_idx + 1) == self.num_batches:
                self.update_lr()
            return summary

        def parse_batch_train(self, batch):
            return batch["img"].to(self.device), batch["label"].to(self.device)

        def load_model(self, directory, epoch=None):
            model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
            for name in self.get_model_names():
                model_path = osp.join(directory, name, model_file)
                if not osp.exists(model_path):
                    raise FileNotFoundError(f'Model not found at "{model_path}"')
                state_dict = load_checkpoint(model_path)["state_dict"]
                state_dict.pop("token_prefix", None)
                state_dict.pop("token_suffix", None)
                self._models[name].load_state_dict(state_dict, strict=False)
''')


@pytest.fixture(scope="module")
def plugin_trainers(tmp_path_factory):
    """The trainer package with the upstream-style file dropped among its trainer files."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "upstream_style_coop.py").write_text(UPSTREAM_STYLE_TRAINER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainers, "__path__", [*trainers.__path__, str(folder)])
        trainers.load_trainer_modules()
        yield folder
    assert "trainers.upstream_style_coop" not in trainers.FAILED


@pytest.fixture
def backbone(tmp_path, monkeypatch):
    """BACKBONE as an OpenAI-style _MODELS entry, served by a loopback server and downloaded
    into a fresh CLIP cache (the plugin finds its CLIP as upstream code does)."""
    served = tmp_path / "served"
    served.mkdir()
    server_iter = serve_folder(served, monkeypatch)
    server = next(server_iter)
    body = open(write_coop_clip(tmp_path / "tiny.pt"), "rb").read()
    url = server.publish(f"clip/{hashlib.sha256(body).hexdigest()}/Tiny-ViT-8.pt", body)
    monkeypatch.setitem(pretrained._MODELS, BACKBONE, url)
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "cache"))
    yield BACKBONE
    next(server_iter, None)


def run_train_py(argv):
    try:
        train.main(argv)
    finally:
        close_logger()


def coop_args(trainer, data, backbone, output_dir, *args):
    return train_py_args(trainer, "CoOp/vit_b16_ep50.yaml", data, backbone, output_dir, *args,
                         overrides=["TRAINER.COOP.N_CTX", str(N_CTX), "TRAINER.COOP.PREC", "fp32",
                                    "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
                                    "DATALOADER.TRAIN_X.BATCH_SIZE", "4"])


def test_upstream_style_trainer_trains_evaluates_and_matches_our_coop(
        plugin_trainers, backbone, tmp_path):
    data = tmp_path / "data"
    make_eurosat(str(data), n_classes=3)
    trained_dir = tmp_path / "train"
    run_train_py(coop_args("UpstreamStyleCoOp", data, backbone, trained_dir))
    trained = read_json(str(trained_dir / "results.json"))
    assert (trained_dir / "prompt_learner" / "model.pth.tar-1").is_file()

    run_train_py(coop_args("UpstreamStyleCoOp", data, backbone, tmp_path / "eval",
                           "--eval-only", "--model-dir", trained_dir, "--load-epoch", "1"))
    assert read_json(str(tmp_path / "eval" / "results.json"))["accuracy"] == trained["accuracy"]

    # The same trained context vectors in the plugin and in our CoOp: the same logits.
    cfgs = {}
    for name in ("UpstreamStyleCoOp", "CoOp"):
        args = train.build_parser().parse_args(coop_args(name, data, backbone, tmp_path / name))
        cfgs[name] = train.setup_cfg(args)
    theirs, ours = build_trainer(cfgs["UpstreamStyleCoOp"]), build_trainer(cfgs["CoOp"])
    theirs.load_model(str(trained_dir), epoch=1)
    ours.load_model(str(trained_dir), epoch=1)
    ctx = theirs.model.prompt_learner.ctx
    torch.testing.assert_close(ours.model.prompt_learner.ctx, ctx)
    assert not torch.allclose(ctx, torch.zeros_like(ctx))
    torch.testing.assert_close(predictions(theirs), predictions(ours))


def test_broken_plugin_is_one_line_and_other_trainers_load(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_plugin.py").write_text(
        "from clip.model import no_such_name\n\nraise SystemExit('not reached')\n")
    monkeypatch.setattr(trainers, "__path__", [*trainers.__path__, str(tmp_path)])
    monkeypatch.setattr(trainers, "FAILED", {})
    trainers.load_trainer_modules()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "broken_plugin" in line]
    assert len(lines) == 1
    assert str(tmp_path / "broken_plugin.py") in lines[0]
    assert "ImportError" in lines[0] and "no_such_name" in lines[0]
    # The other trainers are registered and their config keys still exist.
    assert trainers.default_cfg().TRAINER.COOP.N_CTX == 16
    run_train_py(["--list-trainers"])
    listed = capsys.readouterr().out.split()
    assert {"CoOp", "BMIP", "MaPLe"} <= set(listed)
    # Asking for a trainer that is not registered names the file that failed.
    with pytest.raises(SystemExit, match=r"Unknown trainer \"Broken\".*failed to import: .*"
                                         r"broken_plugin.py: ImportError"):
        run_train_py(["--trainer", "Broken", "--output-dir", str(tmp_path / "out")])


def test_a_clip_path_reaches_the_plugin_through_models_and_download(plugin_trainers, tmp_path):
    """Offline users give MODEL.BACKBONE.NAME a path: `clip._MODELS[path]` is that path and
    `clip._download(path)` returns it, so CoOp-codebase files load it as they load a name."""
    import clip

    path = write_coop_clip(tmp_path / "tiny.pt")
    assert clip._MODELS[str(path)] == str(path) and clip._download(str(path)) == str(path)
    with pytest.raises(pretrained.ModelFileError, match="neither an OpenAI model name"):
        clip._MODELS[str(tmp_path / "missing.pt")]
    data = tmp_path / "data"
    make_eurosat(str(data), n_classes=3)
    run_train_py(coop_args("UpstreamStyleCoOp", data, str(path), tmp_path / "out"))
    assert read_json(str(tmp_path / "out" / "results.json"))["accuracy"] >= 0


def _drop_in(folder, name, text, monkeypatch):
    """`text` as the plugin file `name`.py among the trainers, loaded; the registry, the module
    list and sys.modules are restored after the test."""
    import sys

    from dassl.engine import TRAINER_REGISTRY

    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.setattr(trainers, "__path__", [*trainers.__path__, str(folder)])
    monkeypatch.setattr(trainers, "FAILED", {})
    monkeypatch.setattr(trainers, "MODULES", list(trainers.MODULES))
    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))
    monkeypatch.setitem(sys.modules, f"trainers.{name}", None)
    del sys.modules[f"trainers.{name}"]
    trainers.load_trainer_modules()
    return TRAINER_REGISTRY


def test_a_plugin_registering_a_built_in_name_replaces_it_and_says_so(tmp_path, monkeypatch, capsys):
    registry = _drop_in(tmp_path, "my_maple", '''
        from dassl.engine import TRAINER_REGISTRY, TrainerX


        def extend_cfg(cfg):
            cfg.TRAINER.MAPLE.MINE = True


        @TRAINER_REGISTRY.register()
        class MaPLe(TrainerX):
            """the user's"""
        ''', monkeypatch)
    assert registry.get("MaPLe").__doc__ == "the user's"
    lines = [line for line in capsys.readouterr().err.splitlines() if "my_maple" in line]
    assert len(lines) == 1 and "replaces the built-in MaPLe" in lines[0]
    # its extend_cfg runs after the built-in one, so its keys are kept beside ours
    cfg = trainers.default_cfg()
    assert cfg.TRAINER.MAPLE.MINE and cfg.TRAINER.MAPLE.N_CTX == 2


def test_a_plugin_that_fails_after_registering_a_built_in_name_leaves_the_built_in(
        tmp_path, monkeypatch, capsys):
    from trainers.maple import MaPLe

    registry = _drop_in(tmp_path, "half_maple", '''
        from dassl.engine import TRAINER_REGISTRY, TrainerX


        @TRAINER_REGISTRY.register()
        class MaPLe(TrainerX):
            pass

        raise ImportError("half way")
        ''', monkeypatch)
    assert registry.get("MaPLe") is MaPLe
    assert "half way" in capsys.readouterr().err


FORK_TRAINERS = '''
    from dassl.engine import TRAINER_REGISTRY, TrainerX
    from clip import clip


    @TRAINER_REGISTRY.register()
    class ForkOfMaPLe(TrainerX):
        def build_model(self):
            design_details = {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0,
                              "vision_ctx": 0, "language_ctx": 0, "maple_length": 2}
            clip.build_model({}, design_details)


    @TRAINER_REGISTRY.register()
    class KgCoOpWithoutKeys(TrainerX):
        def build_model(self):
            self.n_ctx = self.cfg.TRAINER.KGCOOP.N_CTX
    '''


@pytest.mark.parametrize("trainer,message", [
    ("ForkOfMaPLe", r"fork_trainers.py calls clip.build_model\(state_dict, design_details\) "
                    r"\(trainer 'MaPLe'\): it needs the MaPLe codebase's modified CLIP"),
    ("KgCoOpWithoutKeys", r"trainer KgCoOpWithoutKeys \(.*fork_trainers.py\) reads the config key "
                          r"TRAINER.KGCOOP, which no trainer file defines: give the file an "
                          r"extend_cfg\(cfg\)"),
])
def test_a_plugin_needing_what_we_lack_stops_in_one_line(trainer, message, tmp_path, monkeypatch):
    _drop_in(tmp_path, "fork_trainers", FORK_TRAINERS, monkeypatch)
    data = tmp_path / "data"
    make_eurosat(str(data), n_classes=3)
    clip_file = write_coop_clip(tmp_path / "tiny.pt")
    with pytest.raises(SystemExit, match=message) as stopped:
        run_train_py(train_py_args(trainer, "CoOp/vit_b16_ep50.yaml", data, str(clip_file),
                                   tmp_path / "out"))
    assert "\n" not in str(stopped.value).strip()
