#!/usr/bin/env python
"""
Noisy-student self-training (Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS
2020) in one command:

1. teacher: fine-tune MODEL.WEIGHTS (random init, ImageNet, a detpre pretraining output, ...) on
   DATASETS.TRAIN with tools/train_net.py, and evaluate it on DATASETS.TEST; by default with the
   student's augmentation and schedule (SELF_TRAIN.TEACHER_AUG "student"), so that it is the
   supervised baseline of the student;
2. pseudo-labels: label SELF_TRAIN.UNLABELED_DATASETS with the teacher (tools/pseudo_label.py);
3. student: train on DATASETS.TRAIN + the pseudo-labels, a full labeled batch plus a pseudo-labeled
   batch each step, strong augmentation, normalized losses (``--stage student`` of this tool),
   and evaluate it;
4. with ``--iterations N``, the student labels the images again as the next teacher, N times;
5. print the AP of teacher and students with the augmentation and schedule of each
   (OUTPUT_DIR/results.{md,csv}).

Each stage runs as a subprocess in its own folder of OUTPUT_DIR (teacher/,
iter<k>/pseudo_labels/, iter<k>/student/) and gets a DONE marker when it finishes: rerunning the
command skips finished stages and resumes the interrupted one from its last checkpoint (or last
flushed pseudo-labels).

    python tools/self_train.py --config-file configs/selftrain/mask_rcnn_R50_FPN_cpu_coco_tiny.yaml
    python tools/self_train.py --num-gpus 8 --iterations 2 \
        --config-file configs/selftrain/mask_rcnn_R50_FPN_1x_coco_imagenet.yaml MODEL.WEIGHTS w.pth
    # one student on existing pseudo-labels (registered with DATASETS.REGISTER_COCO):
    python tools/self_train.py --stage student --config-file ... \
        SELF_TRAIN.PSEUDO_DATASETS "('pl',)" DATASETS.REGISTER_COCO "[('pl', 'pl.json', 'images')]"
"""

import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections import OrderedDict

import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser
from detectron2.utils.logger import setup_logger

from detpre.checkpoint.checkpointer import atomic_write
from detpre.engine import launch_from_args, setup_cfg
from detpre.engine.launch import torchrun_environment
from detpre.evaluation import format_markdown, report_final_results
from detpre.selftrain import StudentTrainer, student_batch_sizes

logger = logging.getLogger("detpre")

TOOLS = os.path.dirname(os.path.abspath(__file__))
DONE = "DONE"
STUDENT_INITS = ("weights", "teacher")
TEACHER_AUGS = ("student", "config")


def main_student(args):
    """Train and evaluate one student (every process, under ``launch``)."""
    cfg = setup_cfg(args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detpre")
    trainer = StudentTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    report_final_results(cfg, results)
    return results


def _launch_args(args):
    return [
        "--num-gpus", str(args.num_gpus), "--num-machines", str(args.num_machines),
        "--machine-rank", str(args.machine_rank), "--dist-url", args.dist_url,
    ]  # fmt: skip


def run_stage(stage_dir, tool, args, *opts, extra=()):
    """
    Run one stage (a detpre tool in a subprocess, resuming) unless its DONE marker exists.

    Args:
        stage_dir (str): the stage's OUTPUT_DIR; gets DONE when the tool exits with 0.
        tool (str): a script in tools/.
        args (argparse.Namespace): this command's arguments (config file, launch options, opts).
        opts (str): KEY VALUE overrides after the command's own.
        extra (list[str]): options before the config file.
    """
    marker = os.path.join(stage_dir, DONE)
    if os.path.isfile(marker):
        print(f"[self_train] {stage_dir}: done, skipped", flush=True)
        return
    os.makedirs(stage_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(TOOLS, tool), *extra, "--resume", *_launch_args(args)]
    cmd += ["--config-file", args.config_file, *args.opts, *opts, "OUTPUT_DIR", stage_dir]
    print("[self_train] + " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    record = {"command": cmd, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write(marker, lambda f: f.write(json.dumps(record, indent=2).encode()))


def _results(stage_dir):
    path = os.path.join(stage_dir, "results.csv")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {
            f"{row['task']} {k}": float(row[k]) for row in csv.DictReader(f) for k in ("AP", "AP50")
        }


def augmentation_name(cfg, strong):
    """What a model was trained with, for the results table."""
    if not strong or cfg.INPUT.STRONG_AUG.PRESET == "none":
        return f"resize {tuple(cfg.INPUT.MIN_SIZE_TRAIN)} / {cfg.INPUT.MAX_SIZE_TRAIN} + flip"
    return f"{cfg.INPUT.STRONG_AUG.PRESET} at {cfg.INPUT.STRONG_AUG.IMAGE_SIZE} px"


def schedule_name(cfg, pseudo_batch=0):
    """Iterations, batch and lr schedule of a model, for the results table."""
    s = cfg.SOLVER
    batch = f"{s.IMS_PER_BATCH} img" + (f" + {pseudo_batch} pseudo img" if pseudo_batch else "")
    lr = "cosine" if s.LR_SCHEDULER_NAME == "WarmupCosineLR" else f"steps {tuple(s.STEPS)}"
    return f"{s.MAX_ITER} it x {batch}, lr {s.BASE_LR:g} {lr}"


def _summary_row(name, stage_dir, augmentation, schedule, index=None):
    row = OrderedDict(model=name, augmentation=augmentation, schedule=schedule)
    row["pseudo images"] = "" if index is None else sum(v["num_images"] for v in index.values())
    row["pseudo boxes"] = "" if index is None else sum(v["num_annotations"] for v in index.values())
    row.update(_results(stage_dir))
    return row


def run_pipeline(args):
    """Teacher, then ``args.iterations`` rounds of pseudo-labels and student; a results table."""
    if torchrun_environment() is not None:
        raise SystemExit(
            "self_train.py runs its stages as subprocesses, each launching its own processes "
            "(--num-gpus / --num-machines): start the pipeline once, not under torchrun or "
            "tools/submit.py; a single stage runs there with --stage student."
        )
    cfg = setup_cfg(args, run_default_setup=False)
    if cfg.SELF_TRAIN.STUDENT_INIT not in STUDENT_INITS:
        raise ValueError(
            f"SELF_TRAIN.STUDENT_INIT must be one of {STUDENT_INITS}, "
            f"got {cfg.SELF_TRAIN.STUDENT_INIT!r}"
        )
    if cfg.SELF_TRAIN.TEACHER_AUG not in TEACHER_AUGS:
        raise ValueError(
            f"SELF_TRAIN.TEACHER_AUG must be one of {TEACHER_AUGS}, "
            f"got {cfg.SELF_TRAIN.TEACHER_AUG!r}"
        )
    if not cfg.SELF_TRAIN.UNLABELED_DATASETS:
        raise ValueError("SELF_TRAIN.UNLABELED_DATASETS is empty: name the images to pseudo-label")
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    out = os.path.abspath(cfg.OUTPUT_DIR)
    teacher_dir = os.path.join(out, "teacher")
    teacher_strong = cfg.SELF_TRAIN.TEACHER_AUG == "student" or cfg.FINETUNE.STRONG_AUG
    teacher_opts = ("FINETUNE.STRONG_AUG", "True") if teacher_strong else ()
    run_stage(teacher_dir, "train_net.py", args, *teacher_opts)
    _, pseudo_batch = student_batch_sizes(
        cfg.SOLVER.IMS_PER_BATCH, cfg.SELF_TRAIN.PSEUDO_IMS_PER_BATCH
    )
    rows = [
        _summary_row(
            "teacher (supervised)",
            teacher_dir,
            augmentation_name(cfg, teacher_strong),
            schedule_name(cfg),
        )
    ]
    student_aug, student_schedule = augmentation_name(cfg, True), schedule_name(cfg, pseudo_batch)
    teacher = os.path.join(teacher_dir, "model_final.pth")
    for k in range(1, args.iterations + 1):
        labels_dir = os.path.join(out, f"iter{k}", "pseudo_labels")
        run_stage(labels_dir, "pseudo_label.py", args, "MODEL.WEIGHTS", teacher)
        with open(os.path.join(labels_dir, "index.json")) as f:
            index = json.load(f)
        names = {f"selftrain_iter{k}_{name}": v for name, v in index.items()}
        register = [tuple(e) for e in cfg.DATASETS.REGISTER_COCO]
        register += [(n, v["json_file"], v["image_root"]) for n, v in names.items()]
        init = cfg.MODEL.WEIGHTS if cfg.SELF_TRAIN.STUDENT_INIT == "weights" else teacher
        student_dir = os.path.join(out, f"iter{k}", "student")
        run_stage(
            student_dir,
            "self_train.py",
            args,
            "MODEL.WEIGHTS", init,
            "DATASETS.REGISTER_COCO", repr(register),
            "SELF_TRAIN.PSEUDO_DATASETS", repr(tuple(names)),
            extra=["--stage", "student"],
        )  # fmt: skip
        rows.append(_summary_row(f"student {k}", student_dir, student_aug, student_schedule, index))
        teacher = os.path.join(student_dir, "model_final.pth")

    table = format_markdown(rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "results.csv"), "w") as f:
        columns = list(OrderedDict.fromkeys(c for row in rows for c in row))
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tests = ", ".join(cfg.DATASETS.TEST)
    print(f"\nSelf-training, teacher vs students on {tests} ({out}/results.md):\n{table}")
    if not teacher_strong:
        print(
            "[self_train] The teacher was trained with another augmentation than the students "
            "(SELF_TRAIN.TEACHER_AUG 'config'): the teacher / student difference mixes the "
            "effect of augmentation with that of self-training.",
            flush=True,
        )
    return rows


def parse_args(argv=None):
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument(
        "--iterations", type=int, default=1, help="students; each becomes the next teacher"
    )
    parser.add_argument(
        "--stage",
        choices=("all", "student"),
        default="all",
        help="all: the whole pipeline (each stage resumes); student: train one student here",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if args.eval_only:
        raise SystemExit("--eval-only: evaluate a checkpoint with tools/train_net.py --eval-only")
    if args.stage == "student":
        launch_from_args(main_student, args)
    else:
        run_pipeline(args)
