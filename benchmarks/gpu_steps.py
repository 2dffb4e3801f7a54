"""One training step of every prompt-learning trainer in each reduced precision, against fp32.

For each trainer (its config below, on the test suite's toy dataset of 3 classes, batch 4) and
each precision of --precisions (PREC fp16, amp, bf16), the trainer is built through the engine
as train.py builds it, given the fp32 run's initial prompt learner and the same batch, and runs
one `forward_backward` (its whole objective: PromptSRC's and CoPrompt's regularisers too). A row
passes when its loss and every prompt-learner gradient are finite, its loss is within
--loss-tolerance (relative) of fp32's and its gradient, all parameters flattened, points the same
way as fp32's (cosine >= --min-cosine). The engine's resolved precision is printed beside the
requested one (on a CPU fp16 and amp become bf16 or fp32). The table goes to stdout; the exit
status is 1 when a row fails.

    python benchmarks/gpu_steps.py --device cuda                        # ViT-B/16 shapes, 224 px
    python benchmarks/gpu_steps.py --device cpu --size tiny --precisions bf16   # a quick check
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, REPO_ROOT)

CONFIGS = {
    "CoOp": "CoOp/vit_b16_ep50.yaml",
    "CoCoOp": "CoCoOp/vit_b16_c4_ep10_batch1.yaml",
    "VPT": "VPT/vit_b16_c2_ep5_batch4_4.yaml",
    "IVLP": "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
    "MaPLe": "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "BMIP": "BMIP/BMIP_ctx2_dp9_lr2.yaml",
    "PromptSRC": "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "CoPrompt": "CoPrompt/coprompt.yaml",
}
SIZES = {  # CLIP shapes: ViT-B/16 at 224 px, or the test suite's tiny CLIP
    "vit-b16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                    vision_patch_size=16, transformer_width=512, transformer_layers=12),
    "tiny": None,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precisions", nargs="+", choices=["fp16", "amp", "bf16"],
                        default=["fp16", "amp", "bf16"])
    parser.add_argument("--trainers", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="CLIP shapes (default vit-b16 on cuda, tiny on cpu)")
    parser.add_argument("--loss-tolerance", type=float, default=0.05,
                        help="largest |loss - fp32 loss| / |fp32 loss| (default 0.05)")
    parser.add_argument("--min-cosine", type=float, default=0.95,
                        help="smallest cosine between the gradient and fp32's (default 0.95)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    args.size = args.size or ("vit-b16" if args.device == "cuda" else "tiny")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible here")
    return args


def prepare(work, size):
    """The CLIP file, the toy data and a descriptions file for CoPrompt, in `work`."""
    from tests.helpers.clip_files import make_vit_state_dict, write_clip_file
    from tests.helpers.engine import TOY_CLASSES, write_toy_images
    from tests.helpers.trainers import write_tiny_clip

    clip_file = os.path.join(work, f"clip-{size}.pt")
    if SIZES[size] is None:
        write_tiny_clip(clip_file)
    else:
        write_clip_file(clip_file, make_vit_state_dict(seed=0, **SIZES[size]))
    data = os.path.join(work, "data")
    os.makedirs(data)
    write_toy_images(data)
    descriptions = os.path.join(work, "descriptions.json")
    with open(descriptions, "w") as f:
        json.dump({name: [f"a photo of something {name}.", f"a {name} thing."]
                   for name in TOY_CLASSES}, f)
    return clip_file, data, descriptions


def build(trainer_name, precision, device, size, clip_file, data, descriptions, output):
    import trainers  # noqa: F401  (registers the trainers)
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed
    from tests.helpers.trainers import TINY_SIZES, toy_trainer_cfg

    resolution = (SIZES[size] or TINY_SIZES)["image_resolution"]
    cfg = toy_trainer_cfg(trainer_name, CONFIGS[trainer_name], clip_file, data, output,
                          f"TRAINER.{trainer_name.upper()}.PREC", precision,
                          "USE_CUDA", device == "cuda", "INPUT.SIZE", (resolution, resolution),
                          "DATALOADER.TRAIN_X.BATCH_SIZE", 4)
    if trainer_name == "CoPrompt":
        cfg.TRAINER.COPROMPT.DESCRIPTIONS = descriptions
    if SIZES[size] is None:   # prompt depths that fit the tiny CLIP's layers
        for section in cfg.TRAINER.values():
            for key, value in getattr(section, "items", dict)():
                if "DEPTH" in key and isinstance(value, int) and value > TINY_SIZES["vision_layers"]:
                    section[key] = TINY_SIZES["vision_layers"]
    set_random_seed(1)
    trainer = build_trainer(cfg)
    trainer.before_train()   # what train() does first (CoPrompt reads its descriptions there)
    return trainer


def one_step(trainer, batch, initial, attempts=8):
    """Loss, the prompt learner's gradients (fp32, flattened) and the step's seconds. Under amp a
    first step whose scaled gradients overflow is skipped by the GradScaler, which halves its
    scale: the step is then taken again from the same state (at most `attempts` times), as
    training would go on."""
    import torch

    learner = trainer.model.prompt_learner
    for _ in range(attempts):
        learner.load_state_dict(initial)
        trainer.batch_idx, trainer.num_batches = 0, 2   # not the epoch's last batch: no LR update
        trainer.set_model_mode("train")
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        summary = trainer.forward_backward(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        grads = [p.grad.detach().float().flatten() for p in learner.parameters()
                 if p.requires_grad and p.grad is not None]
        grad = torch.cat(grads) if grads else torch.zeros(0)
        if getattr(trainer, "scaler", None) is None or bool(torch.isfinite(grad).all()):
            break
    return float(summary["loss"]), grad, seconds


def compare(loss, grad, loss32, grad32, args):
    import torch

    finite = math.isfinite(loss) and bool(torch.isfinite(grad).all())
    relative = abs(loss - loss32) / max(abs(loss32), 1e-12)
    cosine = float(torch.nn.functional.cosine_similarity(grad, grad32, dim=0)) \
        if grad.numel() and grad.shape == grad32.shape else float("nan")
    ok = finite and relative <= args.loss_tolerance and cosine >= args.min_cosine
    return {"finite": finite, "loss_relative": relative, "grad_cosine": cosine, "ok": ok}


def run_trainer(name, args, clip_file, data, descriptions, work):
    """The rows of one trainer: fp32 first, then each precision on its batch and initial state."""
    rows = []
    reference = build(name, "fp32", args.device, args.size, clip_file, data, descriptions,
                      os.path.join(work, f"{name}-fp32"))
    batch = next(iter(reference.train_loader_x))
    initial = {k: v.detach().clone() for k, v in reference.model.prompt_learner.state_dict().items()}
    loss32, grad32, seconds32 = one_step(reference, batch, initial)
    rows.append({"trainer": name, "precision": "fp32", "resolved": reference.precision,
                 "loss": loss32, "seconds": seconds32, "finite": math.isfinite(loss32),
                 "loss_relative": 0.0, "grad_cosine": 1.0, "ok": math.isfinite(loss32)})
    del reference
    for precision in args.precisions:
        trainer = build(name, precision, args.device, args.size, clip_file, data, descriptions,
                        os.path.join(work, f"{name}-{precision}"))
        loss, grad, seconds = one_step(trainer, batch, initial)
        rows.append({"trainer": name, "precision": precision, "resolved": trainer.precision,
                     "loss": loss, "seconds": seconds,
                     **compare(loss, grad, loss32, grad32, args)})
        del trainer
    return rows


def print_table(rows):
    print(f"{'trainer':10s} {'PREC':5s} {'runs':5s} {'loss':>9s} {'vs fp32':>8s} "
          f"{'grad cos':>8s} {'step s':>7s}  verdict")
    for row in rows:
        if "error" in row:
            print(f"{row['trainer']:10s} {row['precision']:5s} {'':5s} FAILED: {row['error']}")
            continue
        print(f"{row['trainer']:10s} {row['precision']:5s} {row['resolved']:5s} "
              f"{row['loss']:9.4f} {row['loss_relative']:8.4f} {row['grad_cosine']:8.4f} "
              f"{row['seconds']:7.3f}  {'ok' if row['ok'] else 'NOT ok'}")


def main(argv=None):
    args = parse_args(argv)
    import torch

    print(f"one training step per trainer, {args.size} CLIP, {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
          + f"; torch {torch.__version__}; goal: finite, loss within {args.loss_tolerance:g} "
          f"of fp32 (relative), gradient cosine >= {args.min_cosine:g}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_steps-") as work:
        clip_file, data, descriptions = prepare(work, args.size)
        for name in args.trainers:
            try:
                rows += run_trainer(name, args, clip_file, data, descriptions, work)
            except Exception as error:  # noqa: BLE001 - reported as a failed row; others still run
                rows.append({"trainer": name, "precision": "-", "ok": False,
                             "error": f"{type(error).__name__}: {str(error)[:200]}"})
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [f"{r['trainer']} {r['precision']}" for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} rows ok"
          + (f"; not ok: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
