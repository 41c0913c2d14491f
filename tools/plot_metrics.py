#!/usr/bin/env python
"""
Plot the training curves of one or more runs (Detectron2 ``metrics.json``): losses, pretext
accuracies, learning rate and momentum against iteration.

    python tools/plot_metrics.py output/pretrain/insloc_R50_FPN_cpu_imagenet_sample -o insloc.png
    python tools/plot_metrics.py output/main_job/*/pretrain -o pretrain.png   # runs overlaid
    python tools/plot_metrics.py output/main_job/*/pretrain --separate -o curves/  # one PNG each
"""

import argparse
import os

from detpre.evaluation.curves import plot_curves, read_metrics


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="metrics.json files or the folders holding them")
    parser.add_argument("-o", "--output", required=True, help="image (or folder with --separate)")
    parser.add_argument("--separate", action="store_true", help="one image per run")
    parser.add_argument("--names", nargs="*", help="run names (default: their folders)")
    return parser


def _name(path):
    path = os.path.abspath(path)
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    parent, leaf = os.path.split(folder)
    return f"{os.path.basename(parent)}/{leaf}" if leaf in ("pretrain", "finetune") else leaf


def main(args):
    names = args.names or [_name(p) for p in args.runs]
    if len(names) != len(args.runs):
        raise SystemExit(f"--names gives {len(names)} names for {len(args.runs)} runs")
    runs = {name: read_metrics(path) for name, path in zip(names, args.runs)}
    written = []
    if args.separate:
        for name, records in runs.items():
            out = os.path.join(args.output, name.replace("/", "_") + ".png")
            plot_curves({name: records}, out, title=name)
            written.append(out)
    else:
        plot_curves(runs, args.output)
        written.append(args.output)
    for out in written:
        print(f"wrote {out}")
    return written


if __name__ == "__main__":
    main(get_parser().parse_args())
