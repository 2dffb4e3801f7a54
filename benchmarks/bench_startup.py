"""How long train.py takes from its start to its first training step (issue 23: <= 2.5 s).

Each candidate runs `train.py` in a fresh process on the same job: a random CLIP of ViT-B/16
shapes (224 px, in OpenAI's format, made by the test suite's generator), synthetic EuroSAT (10
classes, 16 shots), MaPLe's published config, batch 4, DATALOADER.NUM_WORKERS 0. The figure is the
wall time from just before the process is started to the moment the trainer's first
`forward_backward` is entered (the process then exits): interpreter, imports, config, data
split, CLIP file, model, optimizer, data loader and the first batch; beside it, the CPU time
the process used until then (all its threads), which load from other processes changes far
less than the wall time. Candidates:

  * this checkout's train.py;
  * `--baseline DIR`: another checkout of this project, e.g. the code before a change
    (`git archive COMMIT | tar -x -C DIR`), so that before / after are measured in one run;
  * two references that no train.py can beat: `import torch`, and `import torch` with an
    optimizer built (torch imports torch._dynamo when a parameter group is first added).

Every repetition runs each candidate once, in turn (interleaved), so that load from other
processes hits them alike; printed are each candidate's median and range, and the median and
range of the per-repetition ratios to the baseline. The 2.5 s target is for 2 idle cores: the
load average is printed at the start and at the end; on a loaded machine compare the ratios.

    OMP_NUM_THREADS=2 python benchmarks/bench_startup.py --baseline /tmp/before --repeats 7
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
TARGET_SECONDS = 2.5
MARK = "FIRST_STEP_AT"
MARK_CODE = f"import time; print('{MARK}', time.time(), time.process_time(), flush=True)"
REFERENCES = {
    "import torch (reference)": "import torch; " + MARK_CODE,
    "import torch + optimizer (reference)":
        "import torch; torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1); " + MARK_CODE,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="another checkout of this project to compare with")
    parser.add_argument("--repeats", type=int, default=5, help="runs per candidate (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS (default 2)")
    parser.add_argument("--image-resolution", type=int, default=224,
                        help="CLIP input size, a multiple of 16 (default 224; 32 for a smoke run)")
    parser.add_argument("--work-dir", help="folder for the CLIP file and the data (kept); "
                                           "default: a temporary folder, removed at the end")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="extra train.py config overrides after --, e.g. -- TRAINER.MAPLE.PREC fp32")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    if args.image_resolution <= 0 or args.image_resolution % 16:
        parser.error("--image-resolution must be a positive multiple of 16 (the patch size)")
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "train.py")):
        parser.error(f"--baseline {args.baseline} holds no train.py (give a checkout of this project)")
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    return args


def make_job(work, resolution):
    """The CLIP file and the data, made once per work folder."""
    sys.path.insert(0, REPO_ROOT)
    from tests.helpers.clip_files import make_vit_state_dict, write_clip_file
    from tests.helpers.datasets import make_eurosat

    clip_file = os.path.join(work, f"clip-vit-b16-{resolution}px.pt")
    if not os.path.isfile(clip_file):
        state = make_vit_state_dict(embed_dim=512, image_resolution=resolution, vision_layers=12,
                                    vision_width=768, vision_patch_size=16, transformer_width=512,
                                    transformer_layers=12, seed=0)
        write_clip_file(clip_file + ".tmp", state)
        os.replace(clip_file + ".tmp", clip_file)
    data = os.path.join(work, "data")
    if not os.path.isdir(data):
        make_eurosat(data + ".tmp", n_classes=10, n_train=16, n_val=4, n_test=4)
        os.replace(data + ".tmp", data)
    return clip_file, data


def train_command(repo, clip_file, data, output, resolution, opts):
    config = os.path.join(repo, "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml")
    return [sys.executable, os.path.abspath(__file__), "--child", repo, "--",
            "--root", data, "--seed", "1", "--trainer", "MaPLe",
            "--dataset-config-file", os.path.join(repo, "configs/datasets/eurosat.yaml"),
            "--config-file", config, "--output-dir", output,
            "DATASET.NUM_SHOTS", "16", "DATALOADER.NUM_WORKERS", "0",
            "INPUT.SIZE", f"({resolution}, {resolution})", "MODEL.BACKBONE.NAME", clip_file, *opts]


def child(repo, train_args):
    """In the measured process: run REPO's train.py, print the time at which the first training
    step begins, and exit there."""
    import runpy

    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    sys.path.insert(0, repo)
    from dassl.engine.trainer import SimpleTrainer

    built = SimpleTrainer.__init__

    def __init__(self, *args, **kwargs):
        built(self, *args, **kwargs)

        def first_step(batch):
            print(f"{MARK} {time.time():.6f} {time.process_time():.6f}", flush=True)
            os._exit(0)
        self.forward_backward = first_step
    SimpleTrainer.__init__ = __init__
    sys.argv = [os.path.join(repo, "train.py")] + train_args
    runpy.run_path(sys.argv[0], run_name="__main__")
    raise SystemExit("bench_startup: train.py ended without a training step")


def seconds_to_mark(command, env, cwd):
    """(wall seconds, CPU seconds) from the start of COMMAND's process to its MARK line."""
    began = time.time()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    marks = [line for line in result.stdout.splitlines() if line.startswith(MARK)]
    if result.returncode or not marks:
        tail = (result.stdout + result.stderr).strip().splitlines()[-10:]
        raise SystemExit("\n".join(tail) + f"\nbench_startup: the run failed (exit {result.returncode})")
    _, wall, cpu = marks[-1].split()
    return float(wall) - began, float(cpu)


def spread(values):
    return statistics.median(values), min(values), max(values)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[3:])
    args = parse_args(argv)
    work = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="bench_startup-"))
    os.makedirs(work, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    env.pop("PYTHONPATH", None)
    try:
        clip_file, data = make_job(work, args.image_resolution)
        candidates = {"this checkout": os.path.abspath(REPO_ROOT)}
        if args.baseline:
            candidates["baseline"] = os.path.abspath(args.baseline)
        times = {name: [] for name in [*candidates, *REFERENCES]}
        cpu = {name: [] for name in times}
        load_before = os.getloadavg()
        print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {args.threads} threads, "
              f"{args.repeats} repetitions; load average {load_before[0]:.2f}; "
              + ", ".join(f"{name} = {path}" for name, path in candidates.items()), flush=True)
        for repeat in range(args.repeats):
            for name, repo in candidates.items():
                output = os.path.join(work, "output")
                shutil.rmtree(output, ignore_errors=True)
                command = train_command(repo, clip_file, data, output, args.image_resolution,
                                        args.opts)
                wall, used = seconds_to_mark(command, env, work)
                times[name].append(wall)
                cpu[name].append(used)
            for name, code in REFERENCES.items():
                wall, used = seconds_to_mark([sys.executable, "-c", code], env, work)
                times[name].append(wall)
                cpu[name].append(used)
            print(f"  repetition {repeat + 1}: "
                  + ", ".join(f"{name} {values[-1]:.2f} s (CPU {cpu[name][-1]:.2f} s)"
                              for name, values in times.items()),
                  flush=True)
        print(f"\nseconds from the process's start to the first training step, wall and CPU "
              f"(median, range over {args.repeats}); load average at the end "
              f"{os.getloadavg()[0]:.2f}")
        for name, values in times.items():
            med, low, high = spread(values)
            cmed, clow, chigh = spread(cpu[name])
            print(f"  {name:38s} {med:6.2f} s ({low:.2f}-{high:.2f})   CPU {cmed:6.2f} s "
                  f"({clow:.2f}-{chigh:.2f})")
        if args.baseline:
            for label, figures in (("wall", times), ("CPU", cpu)):
                ratios = [a / b for a, b in zip(figures["this checkout"], figures["baseline"])]
                med, low, high = spread(ratios)
                print(f"  this checkout / baseline, {label:4s} per repetition: {med:.2f} "
                      f"({low:.2f}-{high:.2f})")
        med = statistics.median(times["this checkout"])
        print(f"target: train.py's first step <= {TARGET_SECONDS} s on 2 idle cores: "
              f"{'met' if med <= TARGET_SECONDS else 'not met'} ({med:.2f} s here)")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
