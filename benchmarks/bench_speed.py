"""Speed and memory of plain CLIP and of each prompting method, with the issue-13 targets as ratios.

ViT-B/16 shapes at 224 px with random weights (no download), N_CTX 2, prompt depth 9 (MaPLe,
IVLP, BMIP), CoOp with 16 context tokens. Printed, from one run:

- images/s of plain CLIP image encoding and of each trainer's evaluation (text features cached,
  as in a test pass), batch --eval-batch;
- seconds per training step (forward, loss, backward, SGD step) at batch 4 with 10 classes and
  with --many-classes classes (synthetic names of 1 to 3 words), for CoOp, IVLP, MaPLe, BMIP;
  and, for MaPLe with --many-classes classes, the step with full-length prompts
  (MODEL.CUT_TEXT_AT_EOT off), once;
- peak memory of each step: RSS on CPU (sampled every 5 ms, above the RSS before the step), or
  torch.cuda.max_memory_allocated on CUDA;
- for fp32 and bf16 (frozen weights stored in bf16, learners fp32), with the CPU flags seen;
- the targets of issue 13 as ratios, met or not met.

Timings are interleaved: each repetition runs every candidate once in turn, so that load from
other processes hits them alike; each figure is the median over repetitions, each ratio the
median of the per-repetition ratios (with their range).

    OMP_NUM_THREADS=2 python benchmarks/bench_speed.py --quick     # CPU, 2 threads: minutes
    python benchmarks/bench_speed.py --device cuda                    # on a GPU
"""
import argparse
import os
import platform
import statistics
import sys
import threading
import time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clip.model import CLIP, convert_weights_to  # noqa: E402
from dassl.engine.trainer import cpu_has_native_bf16  # noqa: E402
from trainers import default_cfg  # noqa: E402
from trainers.bmip import BMIPPromptLearner  # noqa: E402
from trainers.coop import CoOpPromptLearner  # noqa: E402
from trainers.ivlp import VLPromptLearner  # noqa: E402
from trainers.maple import MultiModalPromptLearner  # noqa: E402
from trainers.prompting import WEIGHT_DTYPES, PromptedCLIP  # noqa: E402

# ViT-B/16 (OpenAI): the sizes clip.build_model reads from the real state dict.
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
               vision_patch_size=16, context_length=77, vocab_size=49408, transformer_width=512,
               transformer_heads=8, transformer_layers=12)
BATCH, N_CTX, DEPTH = 4, 2, 9
EUROSAT = ["annual crop land", "forest", "herbaceous vegetation land", "highway or road",
           "industrial buildings", "pasture land", "permanent crop land",
           "residential buildings", "river", "sea or lake"]
WORDS = ("red fox", "garden", "spider", "monkey", "sports car", "coffee mug", "lighthouse",
         "snow leopard", "violin", "mountain bike", "cabbage butterfly", "water tower", "sea",
         "golden retriever", "pizza", "wooden spoon", "steam locomotive", "tree frog")
LEARNERS = {"CoOp": CoOpPromptLearner, "IVLP": VLPromptLearner,
            "MaPLe": MultiModalPromptLearner, "BMIP": BMIPPromptLearner}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 3")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--many-classes", type=int, default=1000)
    parser.add_argument("--no-full-length", action="store_true",
                        help="skip the (slow) full-length step with many classes")
    return parser.parse_args()


def class_names(count):
    """`count` distinct names of 1 to 3 words (EuroSAT's first, then synthetic ones)."""
    names = list(EUROSAT[:count])
    i = 0
    while len(names) < count:
        words = [WORDS[(i * 7 + k * 5) % len(WORDS)] for k in range(1 + i % 3)]
        names.append(" ".join(words) + f" {i}")
        i += 1
    return names


def method_cfg():
    cfg = default_cfg()
    cfg.TRAINER.BMIP.N_CTX = cfg.TRAINER.MAPLE.N_CTX = N_CTX
    cfg.TRAINER.BMIP.PROMPT_DEPTH = cfg.TRAINER.MAPLE.PROMPT_DEPTH = DEPTH
    cfg.TRAINER.IVLP.N_CTX_TEXT = cfg.TRAINER.IVLP.N_CTX_VISION = N_CTX
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = DEPTH
    return cfg


def build_clip(precision, device):
    torch.manual_seed(0)
    model = CLIP(**VIT_B16).eval()
    if precision in WEIGHT_DTYPES:
        convert_weights_to(model, WEIGHT_DTYPES[precision])
    return model.to(device)


def build_models(clip_model, classnames, device):
    cfg = method_cfg()
    with open(os.devnull, "w") as quiet:  # CoOp announces its context
        stdout, sys.stdout = sys.stdout, quiet
        try:
            return {name: PromptedCLIP(clip_model, learner(cfg, classnames, clip_model)).to(device)
                    for name, learner in LEARNERS.items()}
        finally:
            sys.stdout = stdout


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------

def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of a `with` block above what was in use when it began: CUDA's allocator
    statistics, or the process RSS sampled every 5 ms on CPU."""

    def __init__(self, device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self.running = rss_bytes(), True
        self.sampled = self.base

        def sample():
            while self.running:
                self.sampled = max(self.sampled, rss_bytes())
                time.sleep(0.005)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.sampled, rss_bytes()) - self.base


def timed(runs, device, repeats, memory=False):
    """{name: (median seconds, per-repetition seconds, peak bytes)} for {name: callable}, after
    one warm-up call each, the calls interleaved."""
    peaks = {}
    for name, run in runs.items():
        with PeakMemory(device) as peak:
            run()
        peaks[name] = peak.peak if memory else None
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(values), values, peaks[name])
            for name, values in times.items()}


def ratio(numerators, denominators):
    """Median and range of per-repetition ratios."""
    values = [a / b for a, b in zip(numerators, denominators)]
    return statistics.median(values), min(values), max(values)


def megabytes(value):
    return "-" if value is None else f"{value / 2 ** 20:,.0f} MB"


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

def evaluation(clip_model, models, images, device, repeats):
    def encode():
        with torch.no_grad():
            clip_model.encode_image(images)

    def evaluate(model):
        model.eval()
        with torch.no_grad():
            model(images)  # the first call caches the text features

        def run():
            with torch.no_grad():
                model(images)
        return run

    runs = {"CLIP image encoding": encode}
    runs.update({name: evaluate(model) for name, model in models.items()})
    return timed(runs, device, repeats)


def training_step(model, images, labels):
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=1e-3)
    model.train()

    def run():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return run


def training(models, images, labels, device, repeats):
    runs = {name: training_step(model, images, labels) for name, model in models.items()}
    return timed(runs, device, repeats, memory=True)


def full_length_step(model, images, labels, device):
    """MaPLe's step with many classes, cut (default) and full length, once each after a warm-up
    of the cut one: the full-length step is slow."""
    results = {}
    for cut in (True, False):
        model.text_encoder.cut_at_eot = cut
        results[cut] = timed({"step": training_step(model, images, labels)}, device, 1)["step"]
    model.text_encoder.cut_at_eot = True
    return results


def print_rows(title, rows, images_per_call=None):
    """Seconds per call, or images/s when `images_per_call` is given."""
    print(f"\n{title}")
    for name, (median, values, peak) in rows.items():
        spread = f"{min(values):.3f}-{max(values):.3f} s"
        memory = "" if peak is None else f"   peak {megabytes(peak)}"
        if images_per_call:
            print(f"  {name:22s} {images_per_call / median:8.2f} images/s  (batch "
                  f"{images_per_call}, {spread}){memory}")
        else:
            print(f"  {name:22s} {median:8.3f} s/step  ({spread}){memory}")


def target(name, value, low, high, goal, met):
    verdict = {True: "met", False: "NOT met", None: "undecided"}[met]
    print(f"  {name:62s} {value:6.2f} ({low:.2f}-{high:.2f})  goal {goal:8s} {verdict}")


def main():
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 3
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}; "
          f"device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
             f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"))
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}; native bf16 "
          f"(AVX512-BF16 / AMX): {cpu_has_native_bf16()}")
    print(f"command: {' '.join(sys.argv)}")
    generator = torch.Generator().manual_seed(0)
    eval_images = torch.randn(args.eval_batch, 3, 224, 224, generator=generator).to(device)
    train_images = torch.randn(BATCH, 3, 224, 224, generator=generator).to(device)
    labels = torch.arange(BATCH, device=device) % len(EUROSAT)

    results = {}
    for precision in args.precisions:
        print(f"\n=== {precision} ===")
        clip_model = build_clip(precision, device)
        models = build_models(clip_model, class_names(10), device)
        results[precision, "eval"] = evaluation(clip_model, models, eval_images, device, repeats)
        print_rows("evaluation (text cached)", results[precision, "eval"], args.eval_batch)
        results[precision, "train10"] = training(models, train_images, labels, device, repeats)
        print_rows(f"training step, batch {BATCH}, 10 classes", results[precision, "train10"])
        many = build_models(clip_model, class_names(args.many_classes), device)
        results[precision, "trainmany"] = training(many, train_images, labels, device, 1)
        print_rows(f"training step, batch {BATCH}, {args.many_classes} classes",
                   results[precision, "trainmany"])
        if precision == "fp32" and not args.no_full_length:
            results["full"] = full_length_step(many["MaPLe"], train_images, labels, device)
            cut, full = results["full"][True][0], results["full"][False][0]
            print(f"  MaPLe, {args.many_classes} classes: cut at EOT {cut:.2f} s, full length "
                  f"{full:.2f} s")
        del models, many, clip_model

    print("\n=== targets (issue 13) ===")
    for precision in args.precisions:
        evals, steps = results[precision, "eval"], results[precision, "train10"]
        low_high = ratio(evals["CLIP image encoding"][1], evals["BMIP"][1])
        target(f"{precision}: BMIP eval images/s / plain CLIP image encoding", *low_high,
               ">= 0.95", low_high[0] >= 0.95)
        low_high = ratio(steps["BMIP"][1], steps["MaPLe"][1])
        target(f"{precision}: BMIP training step / MaPLe's (10 classes)", *low_high, "<= 1.05",
               low_high[0] <= 1.05)
        memory = steps["BMIP"][2] / max(steps["MaPLe"][2], 1)
        if device.type == "cpu":
            # RSS above the start of a step reads low for every candidate after the first (the
            # allocator reuses what earlier candidates freed): printed, but it decides nothing.
            target(f"{precision}: BMIP training peak RSS / MaPLe's (sampled)", memory, memory,
                   memory, "<= 1.1", None)
        else:
            target(f"{precision}: BMIP training peak memory / MaPLe's", memory, memory, memory,
                   "<= 1.1", memory <= 1.1)
    if "full" in results:
        speedup = results["full"][False][0] / results["full"][True][0]
        target(f"fp32: MaPLe {args.many_classes}-class step, full length / cut at EOT", speedup,
               speedup, speedup, ">= 3", speedup >= 3)
    if {"fp32", "bf16"} <= set(args.precisions):
        for name in ["CLIP image encoding", *LEARNERS]:
            fp32, bf16 = results["fp32", "eval"][name][1], results["bf16", "eval"][name][1]
            low_high = ratio(fp32, bf16)
            target(f"bf16 / fp32 evaluation images/s, {name}", *low_high, ">= 1.7",
                   low_high[0] >= 1.7)
        for name in LEARNERS:
            fp32, bf16 = results["fp32", "train10"][name][1], results["bf16", "train10"][name][1]
            low_high = ratio(fp32, bf16)
            target(f"fp32 / bf16 training step, {name} (10 classes)", *low_high, "> 1",
                   low_high[0] > 1)
    print("\n(The comparison with the authors' code is not scripted here: benchmarks/README.md.)")


if __name__ == "__main__":
    main()
