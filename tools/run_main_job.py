#!/usr/bin/env python
"""
detpre's main job on the bundled data (what ``make demo`` runs):

1. pretrain R50-FPN without labels on ``imagenet_sample_unlabeled`` with InsLoc, MoCo-v2, SlotCon
   and LOCA, each with its CPU config (the same images; batch, epochs and lr chosen per method by
   measurement, see each config); AlignDet then takes the InsLoc backbone
   through its box-domain stage on selective-search proposals of ``coco_tiny_train``;
2. read out each pretrained network's localization (InsLoc's 3x3-patch linear probe) on
   ``coco_tiny_val`` + ``coco128_train``, in both variants ("grid": the paper's, which borders and
   padding give away; "isolated": each patch fed alone), next to a randomly initialised network
   probed the same way (the control) and chance;
3. fine-tune Faster R-CNN R50-FPN on ``bccd_voc_trainval`` (3 classes of large, frequent
   objects: a few hundred CPU iterations separate the initialisations, where 80-class
   ``coco_tiny`` leaves every row at ~0 AP) from each, and from random initialisation, with the
   same schedule (InsLoc with its release's extra norm after fc1, AlignDet with its release's
   lr / weight-decay overlay), and evaluate on ``bccd_voc_test`` (Pascal VOC AP, AP50, AP75);
4. train Semantic FPN (the pretrained ResNet frozen, FPN and head trained) on the bundled
   semantic set made from COCO's masks (``datasets/prepare_coco_sem_seg.py``: background + 12
   supercategories; coco128 + coco_tiny train -> coco_tiny val) from each, and report mIoU;
5. print one table and write it to ``OUTPUT/results.md`` and ``results.csv``: per method its
   pretext accuracy at the start and the end of pretraining beside chance, its pretext loss at
   the start and the end, the readout, the APs and the mIoU; draw every method's pretraining
   curves (losses, pretext accuracies, lr, momentum) into ``OUTPUT/curves.png`` and the AP50,
   mIoU and readouts per method (random initialisation as a dashed line) into
   ``OUTPUT/results.png``;
6. with ``--self-train``, run ``tools/self_train.py`` (teacher, pseudo-labels, student) on the
   bundled data and print its teacher / student table (``OUTPUT/selftrain/results.md``).

Every stage is the real command-line tool in a subprocess; a stage whose output exists is skipped
and an interrupted one resumes from its last checkpoint, so rerunning continues where it stopped.

    python tools/run_main_job.py                      # everything, a few tens of minutes on 2 cores
    python tools/run_main_job.py --methods random insloc --finetune-opts SOLVER.MAX_ITER 20
"""

import argparse
import csv
import json
import os
import subprocess
import sys
from collections import OrderedDict

from detpre.evaluation import format_markdown, pretext_summary
from detpre.evaluation.curves import panel_keys, plot_curves, plot_results, read_metrics
from detpre.evaluation.localization_probe import VARIANTS
from detpre.methods import FINETUNE_CONFIG, METHODS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_CONFIG = "configs/pretrain/Base-Pretrain-R50-FPN.yaml"
SELF_TRAIN_CONFIG = "configs/selftrain/mask_rcnn_R50_FPN_cpu_coco_tiny.yaml"
# The segmentation column: every method's R50-FPN export, frozen ResNet, on the bundled COCO set.
SEMSEG_CONFIG = "configs/semseg/semantic_fpn_R50_FPN_cpu_coco_sem_seg.yaml"
# The reference row: fine-tuned from random initialisation; the methods come from the table.
RANDOM = "random"
# Every stage keeps its newest periodic checkpoint only (and model_final): enough to resume, and
# the whole job stays at a few GB instead of ~20.
KEEP_ONE_CHECKPOINT = ["SOLVER.CHECKPOINT_MAX_TO_KEEP", "1"]


def run(cmd):
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run([sys.executable] + cmd, cwd=REPO, check=True)


def pretrain(config, out_dir, opts):
    weights = os.path.join(out_dir, "model_final_d2.pth")
    if not os.path.exists(weights):
        cmd = ["tools/pretrain_net.py", "--config-file", config, "--resume"]
        run(cmd + ["OUTPUT_DIR", out_dir] + KEEP_ONE_CHECKPOINT + opts)
    return weights


def probe(weights, out_dir, datasets, opts):
    """Both variants of the localization readout ("grid", "isolated") of ``weights``."""
    results = {}
    for variant in VARIANTS:
        out_file = os.path.join(out_dir, f"probe_{variant}.json")
        if not os.path.exists(out_file):
            cmd = ["tools/localization_probe.py", "--config-file", PROBE_CONFIG]
            cmd += ["--weights", weights, "--dataset", *datasets, "--variant", variant]
            run(cmd + ["--output", out_file] + opts + ["MODEL.DEVICE", "cpu"])
        with open(out_file) as f:
            results[variant] = json.load(f)
    return results


def _readout_columns(readout, control):
    """The readout of both variants, the isolated one's interval, and the control's."""
    lo, hi = readout["isolated"]["test_acc_interval"]
    return OrderedDict(
        [
            ("readout % grid", round(100.0 * readout["grid"]["test_acc"], 1)),
            ("isolated", round(100.0 * readout["isolated"]["test_acc"], 1)),
            ("isolated 95% interval", f"{100 * lo:.1f}-{100 * hi:.1f}"),
            (
                "control grid / isolated",
                f"{100 * control['grid']['test_acc']:.1f} / "
                f"{100 * control['isolated']['test_acc']:.1f}",
            ),
        ]
    )


def proposals(out_dir, preset):
    """Selective-search proposals of coco_tiny_train by a prepare_proposals preset, under
    ``out_dir`` (``$DETPRE_PROPOSALS``, where the pretraining config's dataset reads them)."""
    os.environ["DETPRE_PROPOSALS"] = out_dir
    if not os.path.exists(os.path.join(out_dir, f"coco_tiny_train_{preset}.json")):
        run(["tools/prepare_proposals.py", "--dataset", "coco_tiny_train", "--preset", preset])


def sem_seg_labels(out_dir):
    """The bundled semantic set's label PNGs under ``out_dir`` (``$DETPRE_SEM_SEG``, where the
    segmentation configs' datasets read them)."""
    os.environ["DETPRE_SEM_SEG"] = out_dir
    run(["datasets/prepare_coco_sem_seg.py", "--output-root", out_dir])


def finetune(weights, out_dir, opts, config=FINETUNE_CONFIG):
    results = os.path.join(out_dir, "results.csv")
    if not os.path.exists(results):
        cmd = ["tools/train_net.py", "--config-file", config, "--resume"]
        run(cmd + ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", out_dir] + KEEP_ONE_CHECKPOINT + opts)
    with open(results) as f:
        return {row["task"]: row for row in csv.DictReader(f)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    names = [RANDOM] + list(METHODS)
    parser.add_argument("--methods", nargs="+", default=names, choices=names)
    parser.add_argument("--output-dir", default="output/main_job")
    parser.add_argument("--probe-dataset", nargs="+", default=["coco_tiny_val", "coco128_train"])
    parser.add_argument("--pretrain-opts", nargs="*", default=[], help="KEY VALUE overrides")
    parser.add_argument("--finetune-opts", nargs="*", default=[], help="KEY VALUE overrides")
    parser.add_argument("--probe-opts", nargs="*", default=[], help="probe options")
    parser.add_argument("--semseg-opts", nargs="*", default=[], help="KEY VALUE overrides")
    parser.add_argument(
        "--self-train", action="store_true", help="also run the self-training pipeline"
    )
    parser.add_argument("--self-train-opts", nargs="*", default=[], help="KEY VALUE overrides")
    args = parser.parse_args()
    out = os.path.abspath(args.output_dir)

    rows, curves = [], OrderedDict()
    sem_seg_labels(os.path.join(out, "sem_seg"))
    # The control of every readout: a randomly initialised network probed the same way.
    control = probe("", os.path.join(out, RANDOM), args.probe_dataset, args.probe_opts)
    for name in args.methods:
        method = METHODS.get(name)
        config = method.cpu_config if method else None
        weights = ""
        row = OrderedDict(method=_label(name))
        opts = list(args.pretrain_opts)
        if method and method.init_from:
            base_config = METHODS[method.init_from].cpu_config
            base = pretrain(base_config, os.path.join(out, method.init_from, "pretrain"), opts)
            opts += ["MODEL.WEIGHTS", base]
        if method and method.proposals:
            proposals(os.path.join(out, "proposals"), method.proposals)
        if config is not None:
            weights = pretrain(config, os.path.join(out, name, "pretrain"), opts)
        row.update(_pretext_columns(os.path.join(out, name, "pretrain"), config is not None))
        if config is not None:
            curves[row["method"]] = read_metrics(os.path.join(out, name, "pretrain"))
        readout = probe(weights, os.path.join(out, name), args.probe_dataset, args.probe_opts)
        row.update(_readout_columns(readout, control))
        ft_config = method.finetune_config if method else FINETUNE_CONFIG
        results = finetune(
            weights, os.path.join(out, name, "finetune"), args.finetune_opts, ft_config
        )
        for metric in ("AP", "AP50"):
            row[f"bbox {metric}"] = float(results["bbox"][metric])
        seg = finetune(weights, os.path.join(out, name, "semseg"), args.semseg_opts, SEMSEG_CONFIG)
        row["seg mIoU"] = float(seg["sem_seg"]["mIoU"])
        rows.append(row)

    table = format_markdown(rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "results.csv"), "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_results(
        rows, os.path.join(out, "results.png"),
        ("bbox AP50", "seg mIoU", "readout % grid", "isolated"),
        baseline=_label(RANDOM),
    )  # fmt: skip
    if panel_keys(curves):  # a run too short to log draws nothing
        plot_curves(curves, os.path.join(out, "curves.png"), title="pretraining (main job)")
    chance = 100.0 * control["grid"]["chance"]
    print(
        f"\nFaster R-CNN R50-FPN, bccd_voc_trainval -> bccd_voc_test ({out}/results.md); "
        f"Semantic FPN (frozen ResNet), coco sem seg train -> coco_tiny_sem_seg_val; "
        f"localization readout on {' + '.join(args.probe_dataset)}, chance {chance:.1f} %:\n{table}"
    )
    if args.self_train:
        self_train(os.path.join(out, "selftrain"), args.self_train_opts)


def _label(name):
    """The table's name of a row: a method started from another's output names both."""
    if name == RANDOM:
        return "random init"
    method = METHODS[name]
    if method.init_from:
        return f"{METHODS[method.init_from].label} + {method.label}"
    return method.label


def _pct(value):
    return "" if value is None else round(100.0 * value, 2)


def _pretext_columns(pretrain_dir, pretrained):
    """Pretext accuracy (%) start / end / chance and loss start / end of a pretraining run."""
    summary = pretext_summary(pretrain_dir) if pretrained else {}
    loss = [summary.get("loss_start"), summary.get("loss_end")]
    return OrderedDict(
        [
            ("pretext acc % start", _pct(summary.get("acc_start"))),
            ("acc % end", _pct(summary.get("acc_end"))),
            ("chance %", _pct(summary.get("chance"))),
            ("pretext loss start", "" if loss[0] is None else round(loss[0], 3)),
            ("loss end", "" if loss[1] is None else round(loss[1], 3)),
        ]
    )


def self_train(out_dir, opts):
    """Teacher -> pseudo-labels -> student on the bundled data (resumes; skips when done)."""
    results = os.path.join(out_dir, "results.md")
    if not os.path.exists(results):
        cmd = ["tools/self_train.py", "--config-file", SELF_TRAIN_CONFIG, "OUTPUT_DIR", out_dir]
        run(cmd + KEEP_ONE_CHECKPOINT + opts)
    with open(results) as f:
        print(f"\nSelf-training, coco_tiny_train + unlabeled -> coco_tiny_val:\n{f.read()}")


if __name__ == "__main__":
    main()
