r"""Classify images with a trained prompt learner, among class names you choose.

    python predict.py \
        --model-dir output/base2new/train_base/eurosat/shots_16/BMIP/BMIP_ctx2_dp9_lr2/seed1 \
        --classnames-file my_classes.txt photo1.jpg photo2.png [KEY VALUE ...]

    python predict.py --model-dir DIR --classnames river forest --format csv -- photo1.jpg

Prints, for each image, the --topk most probable classes with their probabilities (--format
text, json or csv). The trainer and the config are the run's: the config.yaml that train.py
saved in --model-dir names them (--trainer and --config-file are for folders without one, e.g.
checkpoints from the CoOp / MaPLe codebases; a --trainer that differs from the run's is
refused, naming the run's). --classnames takes
every word up to the next option: end the list with "--" (or give the images first). Config
overrides (KEY VALUE, e.g. MODEL.BACKBONE.NAME /models/ViT-B-16.pt) follow the images. Loading
messages go to stderr, the predictions to stdout.
"""
import argparse
import contextlib
import csv
import json
import os.path as osp
import sys

# torch, the engine and the trainers are imported once the arguments are read, so that --help
# and argument errors answer at once.

FORMATS = ("text", "json", "csv")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", default=None,
                        help="name of the trainer (default: the one in --model-dir's config.yaml)")
    parser.add_argument("--config-file", default=None,
                        help="method config the model was trained with (default: config.yaml in "
                             "--model-dir)")
    parser.add_argument("--model-dir", default="", help="output folder of the training run")
    parser.add_argument("--load-epoch", type=int, default=None,
                        help="epoch to load (default: model-best.pth.tar, else the latest)")
    parser.add_argument("--classnames", nargs="+", default=[], metavar="NAME",
                        help="the classes to choose from")
    parser.add_argument("--classnames-file", default=None,
                        help="text file with one class name per line (added after --classnames)")
    parser.add_argument("--topk", type=int, default=5, help="classes printed per image")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text (default), json (a list of {image, predictions: [{class, "
                             "probability}]}) or csv (image,rank,class,probability rows)")
    parser.add_argument("--backbone", default="",
                        help="CLIP model: an OpenAI name, an open_clip name "
                        "<model>/<pretrained tag> or a CLIP file")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("inputs", nargs="*", metavar="IMAGE [IMAGE ...] [KEY VALUE ...]",
                        help="image files, then config overrides")
    return parser


def read_classnames(path):
    """One class name per line; blank lines and surrounding spaces are ignored."""
    from dassl.utils import UserError

    if not osp.isfile(path):
        raise FileNotFoundError(f'class names file not found: "{path}"')
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as error:
        raise UserError(f'class names file "{path}" is not UTF-8 text ({error.reason} at byte '
                        f"{error.start}): save it as UTF-8") from error


def split_images_and_opts(inputs):
    """The image paths and the config overrides after them, which start at the first word that
    is a config key and not a file."""
    from trainers import default_cfg

    cfg = default_cfg()
    for index, word in enumerate(inputs):
        if not osp.exists(word) and cfg.has_key(word):
            return inputs[:index], inputs[index:]
    return inputs, []


def check_images_given(images, classnames):
    if images:
        return
    files = [name for name in classnames if osp.isfile(name)]
    hint = f" (read as class names: {', '.join(files)})" if files else ""
    sys.exit("error: no images given" + hint + ": end --classnames with -- before the images, "
             "or give the images first")


def top_classes(probabilities, classnames, topk):
    """[(class name, probability)] of the `topk` most probable classes, most probable first."""
    values, indices = probabilities.topk(min(topk, len(classnames)))
    return [(classnames[index], value)
            for value, index in zip(values.tolist(), indices.tolist(), strict=True)]


def format_prediction(image, probabilities, classnames, topk):
    """The image and its `topk` most probable classes, one per line."""
    lines = [str(image)]
    lines += [f"  {value:7.2%}  {name}" for name, value in top_classes(probabilities, classnames, topk)]
    return "\n".join(lines)


def write_predictions(out, images, probabilities, classnames, topk, output_format):
    """The `topk` classes of each image to the stream `out`, as text, JSON or CSV."""
    if output_format == "text":
        for image, row in zip(images, probabilities, strict=True):
            print(format_prediction(image, row, classnames, topk), file=out)
        return
    tops = [top_classes(row, classnames, topk) for row in probabilities]
    if output_format == "json":
        records = [{"image": str(image),
                    "predictions": [{"class": name, "probability": value} for name, value in top]}
                   for image, top in zip(images, tops, strict=True)]
        json.dump(records, out, indent=2)
        out.write("\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "rank", "class", "probability"])
    for image, top in zip(images, tops, strict=True):
        writer.writerows([str(image), rank, name, f"{value:.6f}"]
                         for rank, (name, value) in enumerate(top, start=1))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.topk < 1:
        parser.error("--topk must be at least 1")
    from dassl.utils import UserError
    from trainers.predict import check_image_paths, load_predictor

    # Errors caused by the user's files or settings: their message says what to do, so it is
    # printed alone instead of a traceback (a missing image is reported as FileNotFoundError).
    user_errors = (UserError, FileNotFoundError)
    images, opts = split_images_and_opts(args.inputs)
    if args.backbone:
        opts = ["MODEL.BACKBONE.NAME", args.backbone, *opts]
    try:
        classnames = list(args.classnames)
        if args.classnames_file:
            classnames += read_classnames(args.classnames_file)
        check_images_given(images, classnames)
        check_image_paths(images)
        with contextlib.redirect_stdout(sys.stderr):
            predictor = load_predictor(args.config_file, args.model_dir, args.trainer,
                                       classnames, load_epoch=args.load_epoch, opts=opts,
                                       device=args.device)
        _, probabilities = predictor.predict(images)
    except user_errors as err:
        sys.exit(f"error: {err}")
    write_predictions(sys.stdout, images, probabilities, predictor.classnames, args.topk,
                      args.format)


if __name__ == "__main__":
    main()
