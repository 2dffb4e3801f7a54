"""Our MaPLe and BMIP against the authors' unmodified code, on the same job and machine.

The job (both sides): a random CLIP of ViT-B/16 shapes in OpenAI's format, synthetic EuroSAT in
CoOp's layout, 16 shots, base classes, PREC fp32, batch 4, DATALOADER.NUM_WORKERS 0, one epoch
of which --iters steps are computed, then the test; CPU only, --threads threads. Each side runs
its own train.py and configs in a subprocess (benchmarks/timed_train.py), with the same timers
around the trainer's forward_backward (a training step) and model_inference (a test batch).

Runs are interleaved per method as A B B A ... (--pairs pairs); ratios ours / authors' are taken
within each adjacent pair, so that load from other processes hits both sides of a ratio alike.
Printed per run: the median training step (the first --warmup steps excluded) and the evaluation
images/s (test images / time inside model_inference); then per method the median and range of
the pair ratios, with verdicts against issue 13's targets (step <= 0.8 x the authors',
evaluation images/s >= 1.2 x theirs).

With --classes N it compares memory instead (issue 23): a synthetic ImageNet in CoOp's layout
with N classes (1 shot, all classes), and per side, method and precision one run in a fresh
process that computes 2 training steps at --batch (default 4) and measures the second one's peak
(benchmarks/peak_memory.py: on the CPU VmHWM after clear_refs above the trimmed RSS, on CUDA
max_memory_allocated), then exits. The authors' side runs PREC fp32 on the CPU (fp16 on CUDA),
ours each of --precisions. Where the authors' step at N classes does not fit the machine, give
--authors-classes (e.g. 100 200): their side is measured there and its peak extrapolated along
the line through those points (the text side grows with the classes, the image side does not),
which the summary says. Ours is also measured at --fit-batch (default 8), and the line through
the two batch sizes gives the largest batch that fits 8 / 16 / 24 GB (the whole process's peak).
Targets: ours <= 1/4 of the authors' step peak at N classes, and <= 4 GB added by one step in
bf16 / fp16 (the --precisions other than fp32).

The authors' code is not part of this repository: fetch it yourself and point the script at it.

    git clone https://github.com/muzairkhattak/multimodal-prompt-learning MAPLE
    git clone https://github.com/LAMDASZ-ML/BMIP BMIP
    git clone https://github.com/KaiyangZhou/Dassl.pytorch DASSL
    pip install --target EXTRA ftfy regex wilds scikit-learn pandas   # their extra imports
    python benchmarks/compare_authors.py --maple-dir MAPLE --bmip-dir BMIP --dassl-dir DASSL \\
        --authors-pythonpath EXTRA
    python benchmarks/compare_authors.py ... --image-resolution 32     # fast smoke run
    python benchmarks/compare_authors.py ... --classes 1000 --authors-classes 100 200   # memory
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
TARGETS = {"step": 0.8, "eval": 1.2}   # ours / authors': step at most, evaluation at least
MEMORY_TARGETS = {"ratio": 0.25, "half_precision_bytes": 4e9}   # issue 23, at --classes
BUDGETS_GB = (8, 16, 24)
PREC_KEYS = {"maple": "TRAINER.MAPLE.PREC", "bmip": "TRAINER.BMIP.PREC"}
AUTHORS_IMPORTS = ("ftfy", "regex", "sklearn", "pandas", "wilds")
AUTHORS_PACKAGES = "ftfy regex wilds scikit-learn pandas"


class Method:
    def __init__(self, key, name, url, env, marker, config, ours_config, train_args, opts):
        self.key, self.name, self.url, self.env, self.marker = key, name, url, env, marker
        self.config, self.ours_config = config, ours_config
        self.train_args, self.opts = train_args, opts


METHODS = {
    "maple": Method("maple", "MaPLe", "https://github.com/muzairkhattak/multimodal-prompt-learning",
                    "MAPLE_DIR", "trainers/maple.py",
                    "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
                    "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
                    [], ["TRAINER.MAPLE.PREC", "fp32"]),
    # The authors' BMIP train.py defaults to --device cuda:0, and its published config
    # (TEST.FINAL_MODEL best_val without validation) fails at the end of training.
    "bmip": Method("bmip", "BMIP", "https://github.com/LAMDASZ-ML/BMIP", "BMIP_DIR",
                   "trainers/bmip.py", "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml",
                   "configs/trainers/BMIP/BMIP_ctx2_dp9_lr2.yaml", ["--device", "cpu"],
                   ["TRAINER.BMIP.PREC", "fp32", "TEST.FINAL_MODEL", "last_step",
                    "TRAIN.EARLY_STOPPING", "False"]),
}
DASSL_URL = "https://github.com/KaiyangZhou/Dassl.pytorch"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["maple", "bmip"])
    parser.add_argument("--maple-dir", default=os.environ.get("MAPLE_DIR"),
                        help="checkout of muzairkhattak/multimodal-prompt-learning (env MAPLE_DIR)")
    parser.add_argument("--bmip-dir", default=os.environ.get("BMIP_DIR"),
                        help="checkout of LAMDASZ-ML/BMIP (env BMIP_DIR)")
    parser.add_argument("--dassl-dir", default=os.environ.get("DASSL_DIR"),
                        help="checkout of KaiyangZhou/Dassl.pytorch, the folder holding dassl/ "
                             "(env DASSL_DIR; default: the copy inside --bmip-dir, if any)")
    parser.add_argument("--authors-pythonpath", default=os.environ.get("AUTHORS_PYTHONPATH"),
                        help="folder(s) on PYTHONPATH for the authors' side only, holding their "
                             f"extra packages ({AUTHORS_PACKAGES}; env AUTHORS_PYTHONPATH)")
    parser.add_argument("--image-resolution", type=int, default=224,
                        help="CLIP input size, a multiple of 16 (default 224; 32 for a fast run)")
    parser.add_argument("--pairs", type=int, default=2,
                        help="pairs of runs per method, A B B A ... (default 2)")
    parser.add_argument("--iters", type=int, default=8,
                        help="training steps computed per run (default 8)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="first steps left out of the median (default 2)")
    parser.add_argument("--test-per-class", type=int, default=10,
                        help="test images per class, 5 base classes are tested (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per run (default 2)")
    parser.add_argument("--classes", type=int,
                        help="compare the peak memory of one training step on a synthetic "
                             "ImageNet with this many classes instead of speed (see above)")
    parser.add_argument("--authors-classes", type=int, nargs="+",
                        help="with --classes: class counts at which the authors' side is "
                             "measured, its peak at --classes extrapolated along their line "
                             "(default: measured at --classes)")
    parser.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16", "fp16"],
                        help="with --classes: our precisions (default fp32 bf16 on the CPU, "
                             "fp32 fp16 on CUDA)")
    parser.add_argument("--batch", type=int, default=4, help="with --classes: batch (default 4)")
    parser.add_argument("--fit-batch", type=int, default=8,
                        help="with --classes: our second batch size, for the largest batch that "
                             "fits 8 / 16 / 24 GB (default 8; 0: skip)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the runs compute (default cpu; cuda needs a GPU)")
    parser.add_argument("--work-dir",
                        help="folder for the CLIP file, the data and the logs (kept); "
                             "default: a temporary folder, removed at the end")
    args = parser.parse_args(argv)
    if args.image_resolution <= 0 or args.image_resolution % 16:
        parser.error("--image-resolution must be a positive multiple of 16 (the patch size)")
    if args.iters <= args.warmup:
        parser.error("--iters must be larger than --warmup")
    for name in ("pairs", "test_per_class", "threads", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.classes is None:
        for name in ("authors_classes", "precisions"):
            if getattr(args, name):
                parser.error(f"--{name.replace('_', '-')} goes with --classes")
    else:
        if args.classes < 2 or any(n < 2 for n in args.authors_classes or []):
            parser.error("--classes and --authors-classes must be at least 2")
        if args.authors_classes and len(set(args.authors_classes)) < 2 and \
                args.authors_classes != [args.classes]:
            parser.error("--authors-classes needs two counts or more to extrapolate from")
        if args.fit_batch and args.fit_batch == args.batch:
            parser.error("--fit-batch must differ from --batch (0 skips it)")
        if args.precisions is None:
            args.precisions = ["fp32", "fp16" if args.device == "cuda" else "bf16"]
    return args


# ---------------------------------------------------------------------------------------------
# The authors' checkouts
# ---------------------------------------------------------------------------------------------

def fetch_hint(methods):
    """One line: what to fetch for METHODS, and how to pass it."""
    repos = [f"{METHODS[m].url} (--{m}-dir or env {METHODS[m].env})" for m in methods]
    return ("compare_authors: needs the authors' code: fetch " + ", ".join(repos)
            + f" and {DASSL_URL} (--dassl-dir or env DASSL_DIR)")


def find_checkouts(args):
    """{method: repository root} for the requested methods whose checkout is given, printing
    one line per method skipped; the Dassl folder. Exits with the fetch hint when none is left."""
    found = {}
    for key in args.methods:
        method = METHODS[key]
        folder = getattr(args, f"{key}_dir")
        if not folder:
            print(f"skipping {method.name}: no checkout of the authors' code "
                  f"(--{key}-dir or env {method.env}; fetch {method.url})")
        elif not os.path.isfile(os.path.join(folder, method.marker)):
            raise SystemExit(f"compare_authors: --{key}-dir {folder} is not a checkout of "
                             f"{method.url} (no {method.marker})")
        else:
            found[key] = os.path.abspath(folder)
    if not found:
        raise SystemExit(fetch_hint(args.methods))
    dassl = args.dassl_dir
    if not dassl and "bmip" in found and os.path.isdir(
            os.path.join(found["bmip"], "Dassl.pytorch-master", "dassl")):
        dassl = os.path.join(found["bmip"], "Dassl.pytorch-master")
    if not dassl:
        raise SystemExit(f"compare_authors: needs Dassl: fetch {DASSL_URL} and pass "
                         "--dassl-dir (or env DASSL_DIR)")
    if os.path.basename(os.path.normpath(dassl)) == "dassl" and not os.path.isdir(
            os.path.join(dassl, "dassl")):
        dassl = os.path.dirname(os.path.normpath(dassl))
    if not os.path.isfile(os.path.join(dassl, "dassl", "__init__.py")):
        raise SystemExit(f"compare_authors: --dassl-dir {dassl} holds no dassl package "
                         f"(give the root of a checkout of {DASSL_URL})")
    return found, os.path.abspath(dassl)


def authors_env(args):
    env = run_env(args)
    if args.authors_pythonpath:   # the runs' working folder is not the caller's
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p) for p in args.authors_pythonpath.split(os.pathsep) if p)
    return env


def run_env(args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    if getattr(args, "device", "cpu") == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def check_authors_imports(args):
    """Fail early, in one line, when the authors' extra packages cannot be imported."""
    code = "import " + ", ".join(AUTHORS_IMPORTS)
    result = subprocess.run([sys.executable, "-c", code], env=authors_env(args), cwd=tempfile.gettempdir(),
                            capture_output=True, text=True)
    if result.returncode:
        missing = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "?"
        raise SystemExit(f"compare_authors: the authors' code needs {AUTHORS_PACKAGES} ({missing}): "
                         f"pip install --target EXTRA {AUTHORS_PACKAGES}, then pass "
                         "--authors-pythonpath EXTRA")


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------

def make_job(work, resolution, test_per_class, with_data=True):
    """The CLIP file and one copy of the data per side (their few-shot caches differ); made once
    per work folder (`with_data` False: the CLIP file only)."""
    sys.path.insert(0, REPO_ROOT)
    clip_file = os.path.join(work, f"clip-vit-b16-{resolution}px.pt")
    if not os.path.isfile(clip_file):
        from tests.helpers.clip_files import make_vit_state_dict, write_clip_file

        print(f"writing a random ViT-B/16-shaped CLIP ({resolution} px) to {clip_file}", flush=True)
        state = make_vit_state_dict(embed_dim=512, image_resolution=resolution, vision_layers=12,
                                    vision_width=768, vision_patch_size=16, transformer_width=512,
                                    transformer_layers=12, seed=0)
        write_clip_file(clip_file + ".tmp", state)
        os.replace(clip_file + ".tmp", clip_file)
    data = {}
    for side in ("ours", "authors") if with_data else ():
        data[side] = os.path.join(work, f"data-{test_per_class}-{side}")
        if not os.path.isdir(data[side]):
            from tests.helpers.datasets import make_eurosat

            make_eurosat(data[side] + ".tmp", n_classes=10, n_train=16, n_val=4,
                         n_test=test_per_class)
            os.replace(data[side] + ".tmp", data[side])
    return clip_file, data


def train_command(side, method, args, checkouts, dassl, clip_file, data, output, timing):
    """The subprocess command of one run."""
    size = f"({args.image_resolution}, {args.image_resolution})"
    opts = ["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base",
            "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", "INPUT.SIZE", size] + method.opts
    runner = [sys.executable, os.path.join(HERE, "timed_train.py"), "--side", side,
              "--timing", timing, "--iters", str(args.iters), "--threads", str(args.threads)]
    if side == "ours":
        root, extra = REPO_ROOT, []
        opts += ["MODEL.BACKBONE.NAME", clip_file]
    else:
        root, extra = checkouts[method.key], method.train_args
        runner += ["--method", method.key, "--repo", root, "--dassl", dassl, "--clip", clip_file]
    config = method.ours_config if side == "ours" else method.config
    return runner + ["--", "--root", data[side], "--seed", "1", "--trainer", method.name,
                     "--dataset-config-file", os.path.join(root, "configs/datasets/eurosat.yaml"),
                     "--config-file", os.path.join(root, config), "--output-dir", output,
                     *extra, *opts]


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def interleaved_sides(pairs):
    """Run order A B B A A B ...: pair k is (ours, authors) for even k, (authors, ours) for odd."""
    order = []
    for k in range(pairs):
        order += ["ours", "authors"] if k % 2 == 0 else ["authors", "ours"]
    return order


def run_figures(record, warmup):
    """Median step (after WARMUP steps) and evaluation images/s (test split, time inside
    model_inference) of one run's timing record."""
    steps = record["steps"][warmup:]
    if not steps:
        raise ValueError(f"the run timed {len(record['steps'])} steps, not more than --warmup {warmup}")
    tests = [t for t in record["tests"] if t["split"] == "test"]
    if not tests or not tests[-1]["images"]:
        raise ValueError("the run has no test of the test split")
    test = tests[-1]
    losses = record["losses"]
    return {"step": statistics.median(steps), "eval": test["images"] / test["model_seconds"],
            "eval_wall": test["images"] / test["seconds"], "test_images": test["images"],
            "accuracy": test["accuracy"], "steps": len(record["steps"]),
            "finite": all(loss == loss and abs(loss) != float("inf") for loss in losses)}


def pair_ratios(runs):
    """Ratios ours / authors' within each adjacent pair of RUNS (a list of (side, figures) in
    run order, A B B A ...): {"step": [...], "eval": [...]}."""
    if len(runs) % 2:
        raise ValueError("an odd number of runs cannot be paired")
    ratios = {"step": [], "eval": []}
    for first, second in zip(runs[::2], runs[1::2]):
        pair = dict([first, second])
        if set(pair) != {"ours", "authors"}:
            raise ValueError(f"a pair must hold one run of each side, not {first[0]} and {second[0]}")
        for key in ratios:
            ratios[key].append(pair["ours"][key] / pair["authors"][key])
    return ratios


def verdict(ratios, key):
    """Met when every pair meets the target, NOT met when none does, mixed otherwise."""
    goal = TARGETS[key]
    met = [r <= goal if key == "step" else r >= goal for r in ratios]
    if all(met):
        return "met"
    if not any(met):
        return "NOT met"
    return f"mixed: met in {sum(met)} of {len(met)} pairs"


def spread(values):
    return statistics.median(values), min(values), max(values)


def print_summary(name, runs):
    ratios = pair_ratios(runs)
    print(f"\n{name}: median over runs (range)")
    for side, label in (("ours", "ours"), ("authors", "authors'")):
        steps = spread([f["step"] for s, f in runs if s == side])
        evals = spread([f["eval"] for s, f in runs if s == side])
        print(f"  {label:9s} training step {steps[0]:.3f} s ({steps[1]:.3f}-{steps[2]:.3f})  "
              f"evaluation {evals[0]:.2f} images/s ({evals[1]:.2f}-{evals[2]:.2f})")
    print(f"{name}: ours / authors' within each pair (median, range over {len(runs) // 2} pairs)")
    for key, label, goal in (("step", "training step", "<= 0.8"),
                             ("eval", "evaluation images/s", ">= 1.2")):
        med, low, high = spread(ratios[key])
        values = ", ".join(f"{r:.2f}" for r in ratios[key])
        print(f"  {label:20s} {med:5.2f} ({low:.2f}-{high:.2f}; pairs {values})  goal {goal}  "
              f"{verdict(ratios[key], key)}")
    return ratios


# ---------------------------------------------------------------------------------------------
# Memory at many classes (--classes)
# ---------------------------------------------------------------------------------------------

def imagenet_classes(count):
    """`count` (wnid, name) pairs: synthetic wnids, names of 1 to 3 words as bench_speed.py's
    many-class steps use (ImageNet's names are of that length)."""
    sys.path.insert(0, REPO_ROOT)
    from benchmarks.bench_speed import class_names

    return [(f"n{index:08d}", name) for index, name in enumerate(class_names(count))]


def make_imagenet_data(work, side, classes):
    """ImageNet in CoOp's layout with `classes` classes, one training and one val image each
    (one copy per side and count: the few-shot caches differ); made once per work folder."""
    folder = os.path.join(work, f"imagenet-{classes}-{side}")
    if not os.path.isdir(folder):
        sys.path.insert(0, REPO_ROOT)
        from tests.helpers.datasets import make_imagenet

        names = imagenet_classes(classes)
        make_imagenet(folder + ".tmp", n_classes=classes, n_train=1, n_val=1, classes=names)
        os.replace(folder + ".tmp", folder)
    return folder


def memory_command(side, method, args, checkouts, dassl, clip_file, data, output, timing,
                   precision, batch):
    """The subprocess command of one memory run: 2 steps, the second measured, then exit."""
    size = f"({args.image_resolution}, {args.image_resolution})"
    opts = ["DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", "all",
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch),
            "OPTIM.MAX_EPOCH", "1", "INPUT.SIZE", size] + method.opts
    opts += [PREC_KEYS[method.key], precision]
    runner = [sys.executable, os.path.join(HERE, "timed_train.py"), "--side", side,
              "--timing", timing, "--iters", "2", "--memory-step", "2", "--exit-after-steps",
              "--threads", str(args.threads)]
    extra = []
    if side == "ours":
        root = REPO_ROOT
        opts += ["MODEL.BACKBONE.NAME", clip_file]
    else:
        root = checkouts[method.key]
        if args.device == "cpu":
            extra = method.train_args
        runner += ["--method", method.key, "--repo", root, "--dassl", dassl, "--clip", clip_file]
    config = method.ours_config if side == "ours" else method.config
    return runner + ["--", "--root", data, "--seed", "1", "--trainer", method.name,
                     "--dataset-config-file", os.path.join(root, "configs/datasets/imagenet.yaml"),
                     "--config-file", os.path.join(root, config), "--output-dir", output,
                     *extra, *opts]


def memory_run(args, work, tag, command, env):
    """{"peak", "total", "method", "reliable", "seconds"} of one memory run, or {"failed": why}."""
    import json

    run_dir = os.path.join(work, tag)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    log, timing = os.path.join(run_dir, "log.txt"), os.path.join(work, tag + ".json")
    if os.path.exists(timing):
        os.remove(timing)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, env=env, cwd=run_dir, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    record = {}
    if os.path.exists(timing):
        with open(timing) as f:
            record = json.load(f)
    shutil.rmtree(os.path.join(run_dir, "output"), ignore_errors=True)
    if code or "memory" not in record or record["memory"]["peak"] is None:
        with open(log) as f:
            last = [line.strip() for line in f if line.strip()][-1:] or ["(empty log)"]
        return {"failed": f"exit {code}: {last[0][:200]} (log: {log})", "seconds": seconds}
    return {**record["memory"], "seconds": seconds}


def fit_line(points):
    """Least-squares line through [(x, y), ...]: (intercept, slope)."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread_x = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread_x
    return mean_y - slope * mean_x, slope


def largest_batch(budget, at_batch, at_fit_batch, batch, fit_batch):
    """The largest batch whose whole-process peak stays within `budget` bytes, along the line
    through the peaks at `batch` and `fit_batch`; 0 when not even one image fits."""
    slope = (at_fit_batch - at_batch) / (fit_batch - batch)
    if slope <= 0:
        return None   # the images cost nothing measurable: no bound from these two points
    return max(0, int((budget - (at_batch - slope * batch)) // slope))


def mb(value):
    return f"{value / 1e6:,.0f} MB"


def memory_main(args, checkouts, dassl, work):
    clip_file = make_job(work, args.image_resolution, args.test_per_class, with_data=False)[0]
    authors_counts = sorted(set(args.authors_classes or [args.classes]))
    authors_precision = "fp16" if args.device == "cuda" else "fp32"
    print(f"memory of one training step (the second of the run), batch {args.batch}, "
          f"{args.classes} classes, {args.device}; each run in a fresh process", flush=True)
    results, failed = {}, []
    for key in (m for m in args.methods if m in checkouts):
        method = METHODS[key]
        plan = [("authors", n, authors_precision, args.batch) for n in authors_counts]
        plan += [("ours", n, authors_precision, args.batch) for n in authors_counts
                 if n != args.classes]
        for precision in args.precisions:
            plan.append(("ours", args.classes, precision, args.batch))
            if args.fit_batch:
                plan.append(("ours", args.classes, precision, args.fit_batch))
        print(f"\n{method.name}: ours = {REPO_ROOT}, authors' = {checkouts[key]}", flush=True)
        for side, classes, precision, batch in plan:
            tag = f"{key}-{side}-{classes}c-{precision}-b{batch}"
            data = make_imagenet_data(work, side, classes)
            command = memory_command(side, method, args, checkouts, dassl, clip_file, data,
                                     os.path.join(work, tag, "output"),
                                     os.path.join(work, tag + ".json"), precision, batch)
            env = run_env(args) if side == "ours" else authors_env(args)
            result = memory_run(args, work, tag, command, env)
            results[key, side, classes, precision, batch] = result
            if "failed" in result:
                failed.append(tag)
                print(f"  {tag:34s} FAILED ({result['failed']})", flush=True)
            else:
                print(f"  {tag:34s} step +{mb(result['peak'])} (process peak "
                      f"{mb(result['total'])}; {result['method']})  run {result['seconds']:.0f} s",
                      flush=True)
    print_memory_summary(args, results, authors_counts, authors_precision)
    return failed


def print_memory_summary(args, results, authors_counts, authors_precision):
    n, batch = args.classes, args.batch
    print(f"\nSummary: peak a training step adds, {n} classes, batch {batch} ({args.device})")
    for key in args.methods:
        method = METHODS[key]
        authors = [(c, results.get((key, "authors", c, authors_precision, batch))) for c in
                   authors_counts]
        authors = [(c, r) for c, r in authors if r and "failed" not in r]
        if not authors:
            continue
        if n in dict(authors):
            theirs, how = dict(authors)[n]["peak"], "measured"
        elif len(authors) >= 2:
            intercept, slope = fit_line([(c, r["peak"]) for c, r in authors])
            theirs = intercept + slope * n
            how = (f"extrapolated from {', '.join(str(c) for c, _ in authors)} classes: "
                   f"{mb(intercept)} + {slope / 1e6:,.2f} MB per class")
        else:
            print(f"  {method.name}: the authors' side has one usable count, not extrapolated")
            continue
        for c, r in authors:
            ours = results.get((key, "ours", c, authors_precision, batch))
            if c != n and ours and "failed" not in ours:
                print(f"  {method.name} {c} classes {authors_precision}: ours +{mb(ours['peak'])}, "
                      f"authors' +{mb(r['peak'])}: {ours['peak'] / r['peak']:.3f}")
        ours = results.get((key, "ours", n, authors_precision, batch))
        if ours and "failed" not in ours:
            ratio = ours["peak"] / theirs
            print(f"  {method.name} {n} classes {authors_precision}: ours +{mb(ours['peak'])}, "
                  f"authors' +{mb(theirs)} ({how}): {ratio:.3f}  goal <= "
                  f"{MEMORY_TARGETS['ratio']}  "
                  f"{'met' if ratio <= MEMORY_TARGETS['ratio'] else 'NOT met'}")
    goal = MEMORY_TARGETS["half_precision_bytes"]
    for key in args.methods:
        for precision in args.precisions:
            ours = results.get((key, "ours", n, precision, batch))
            if not ours or "failed" in ours:
                continue
            line = f"  {METHODS[key].name} {precision}: ours +{mb(ours['peak'])}"
            if precision != "fp32":
                line += (f"  goal <= {goal / 1e9:.0f} GB  "
                         f"{'met' if ours['peak'] <= goal else 'NOT met'}")
            fit = results.get((key, "ours", n, precision, args.fit_batch))
            if args.fit_batch and fit and "failed" not in fit:
                fits = [largest_batch(gb * 1e9, ours["total"], fit["total"], batch,
                                      args.fit_batch) for gb in BUDGETS_GB]
                line += ("; largest batch within " + " / ".join(f"{gb}" for gb in BUDGETS_GB)
                         + " GB (whole process): "
                         + " / ".join("?" if f is None else str(f) for f in fits))
            print(line)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def run_one(command, env, log, timing, warmup):
    import json

    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, env=env, cwd=os.path.dirname(log), stdout=out,
                              stderr=subprocess.STDOUT).returncode
    if code:
        with open(log) as f:
            tail = "".join(f.readlines()[-15:])
        raise SystemExit(f"{tail}\ncompare_authors: the run failed (exit {code}); its log: {log}")
    with open(timing) as f:
        record = json.load(f)
    figures = run_figures(record, warmup)
    figures["seconds"] = time.perf_counter() - start
    figures["patches"] = record.get("patches", [])
    return figures


def main(argv=None):
    args = parse_args(argv)
    checkouts, dassl = find_checkouts(args)
    check_authors_imports(args)
    work = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="compare_authors-"))
    os.makedirs(work, exist_ok=True)
    job = (f"{args.iters} steps per run (first {args.warmup} left out), "
           f"{5 * args.test_per_class} test images, {args.pairs} pairs per method"
           if args.classes is None else f"memory at {args.classes} classes")
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {args.image_resolution} px, "
          f"{args.threads} threads, {job}; work folder {work}")
    print(f"Dassl for the authors' code: {dassl}")
    if args.classes is not None:
        failed = []
        try:
            failed = memory_main(args, checkouts, dassl, work)
        finally:
            if not args.work_dir and not failed:
                shutil.rmtree(work, ignore_errors=True)
        print(f"\ncommand: {' '.join(sys.argv)}")
        if failed:
            raise SystemExit(f"compare_authors: {len(failed)} run(s) failed: {', '.join(failed)}")
        return
    clip_file, data = make_job(work, args.image_resolution, args.test_per_class)
    failed_losses, finished = [], False
    try:
        for key in (m for m in args.methods if m in checkouts):
            method = METHODS[key]
            print(f"\n{method.name}: ours = {REPO_ROOT}, authors' = {checkouts[key]}")
            runs = []
            for index, side in enumerate(interleaved_sides(args.pairs)):
                tag = f"{key}-{index + 1}-{side}"
                run_dir = os.path.join(work, tag)
                shutil.rmtree(run_dir, ignore_errors=True)
                os.makedirs(run_dir)
                timing = os.path.join(work, tag + ".json")
                command = train_command(side, method, args, checkouts, dassl, clip_file, data,
                                        os.path.join(run_dir, "output"), timing)
                env = run_env(args) if side == "ours" else authors_env(args)
                figures = run_one(command, env, os.path.join(run_dir, "log.txt"), timing,
                                  args.warmup)
                # The outputs hold checkpoints (the authors' hold all of CLIP: 0.5 GB at 224 px).
                shutil.rmtree(os.path.join(run_dir, "output"), ignore_errors=True)
                if side == "authors" and index < 2:
                    print(f"  authors' code patched: {'; '.join(figures['patches'])}")
                print(f"  {tag:18s} step {figures['step']:7.3f} s (median of "
                      f"{figures['steps'] - args.warmup})  evaluation {figures['eval']:7.2f} "
                      f"images/s ({figures['eval_wall']:.2f} with data loading)  accuracy "
                      f"{figures['accuracy']:.1f}%  run {figures['seconds']:.0f} s", flush=True)
                if not figures["finite"]:
                    failed_losses.append(tag)
                runs.append((side, figures))
            print_summary(method.name, runs)
        finished = True
    finally:
        if not args.work_dir and finished:   # a failed run's log stays for reading
            shutil.rmtree(work, ignore_errors=True)
    if failed_losses:
        print(f"\nwarning: non-finite training losses in {', '.join(failed_losses)}")
    print(f"\ncommand: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
