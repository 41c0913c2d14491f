"""tools/self_train.py: the stages chained (teacher -> pseudo-labels -> student -> next teacher),
done markers, a tiny real run on the bundled data killed during the student and resumed."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from pycocotools.coco import COCO

CPU_CONFIG = os.path.join("configs", "selftrain", "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml")
# Small enough for a CPU test: 3 iterations of 2 images at 64 px, 2 unlabeled images per dataset,
# a checkpoint every iteration (the kill lands between two; only the newest is kept), few
# proposals and detections. The score threshold is 0 so that the barely trained teacher still
# gives pseudo boxes and masks.
TINY = [
    "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.CHECKPOINT_MAX_TO_KEEP", "1",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96", "INPUT.STRONG_AUG.IMAGE_SIZE", "96",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "20", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    "TEST.DETECTIONS_PER_IMAGE", "5", "SELF_TRAIN.PSEUDO_LABEL.MAX_IMAGES", "2",
    "SELF_TRAIN.PSEUDO_LABEL.SCORE_THRESH", "0.0", "SEED", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def self_train(repo_root):
    path = os.path.join(repo_root, "tools", "self_train.py")
    spec = importlib.util.spec_from_file_location("self_train_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def val_subset(datasets_root, path, n=3):
    """A registered-from-the-command-line test set: the first n images of coco_tiny_val."""
    with open(
        os.path.join(datasets_root, "coco_tiny", "annotations", "instances_val2017.json")
    ) as f:
        coco = json.load(f)
    coco["images"] = coco["images"][:n]
    ids = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    with open(path, "w") as f:
        json.dump(coco, f)
    return ["DATASETS.REGISTER_COCO", f"[('val_mini', '{path}', 'coco_tiny/val2017')]"] + [
        "DATASETS.TEST",
        "('val_mini',)",
    ]


def opt(cmd, key):
    """The last value given to a KEY VALUE override in a command."""
    return cmd[len(cmd) - 1 - cmd[::-1].index(key) + 1]


class FakeStages:
    """Stands in for the stage subprocesses: writes what each tool leaves in its OUTPUT_DIR."""

    def __init__(self):
        self.calls = []

    def __call__(self, cmd, check):
        tool = os.path.basename(cmd[1])
        out = opt(cmd, "OUTPUT_DIR")
        self.calls.append((tool, cmd))
        if tool == "pseudo_label.py":
            index = {
                name: {
                    "json_file": os.path.join(out, f"{name}.json"),
                    "image_root": "/images",
                    "num_images": 10,
                    "num_annotations": 7,
                    "num_skipped": 0,
                }
                for name in ("coco128_train", "imagenet_sample_unlabeled")
            }
            with open(os.path.join(out, "index.json"), "w") as f:
                json.dump(index, f)
            return
        open(os.path.join(out, "model_final.pth"), "w").close()
        ap = 1.0 + len(self.calls)  # a different AP per stage
        with open(os.path.join(out, "results.csv"), "w") as f:
            f.write(f"dataset,task,AP,AP50\ncoco_tiny_val,bbox,{ap},{2 * ap}\n")


def run_fake(self_train, monkeypatch, out, *opts, iterations=3):
    fake = FakeStages()
    monkeypatch.setattr(self_train.subprocess, "run", fake)
    args = self_train.parse_args(
        ["--config-file", CPU_CONFIG, "--iterations", str(iterations), "OUTPUT_DIR", str(out)]
        + list(opts)
    )
    rows = self_train.run_pipeline(args)
    return fake, rows


@pytest.mark.parametrize("init", ["weights", "teacher"])
def test_stages_chain_students_into_teachers(
    self_train, repo_root, tmp_path, monkeypatch, new_names, init
):
    monkeypatch.chdir(repo_root)
    out = tmp_path / "run"
    mine = (new_names("mine"), "coco_tiny/annotations/instances_val2017.json", "coco_tiny/val2017")
    extra = ["DATASETS.REGISTER_COCO", repr([mine])]
    fake, rows = run_fake(
        self_train, monkeypatch, out, "MODEL.WEIGHTS", "start.pth",
        "SELF_TRAIN.STUDENT_INIT", init, *extra,
    )  # fmt: skip
    tools = [tool for tool, _ in fake.calls]
    assert tools == ["train_net.py"] + ["pseudo_label.py", "self_train.py"] * 3
    teacher = str(out / "teacher" / "model_final.pth")
    for k in (1, 2, 3):
        (_, label), (_, student) = fake.calls[2 * k - 1 : 2 * k + 1]
        assert opt(label, "OUTPUT_DIR") == str(out / f"iter{k}" / "pseudo_labels")
        assert opt(label, "MODEL.WEIGHTS") == teacher  # labelled by the previous model
        assert student[2:4] == ["--stage", "student"] and "--resume" in student
        assert opt(student, "MODEL.WEIGHTS") == ("start.pth" if init == "weights" else teacher)
        names = (f"selftrain_iter{k}_coco128_train", f"selftrain_iter{k}_imagenet_sample_unlabeled")
        assert eval(opt(student, "SELF_TRAIN.PSEUDO_DATASETS")) == names
        register = eval(opt(student, "DATASETS.REGISTER_COCO"))
        assert register[0] == mine  # the config's own registrations are kept
        assert [r[0] for r in register[1:]] == list(names)
        teacher = str(out / f"iter{k}" / "student" / "model_final.pth")
    assert opt(fake.calls[0][1], "MODEL.WEIGHTS") == "start.pth"
    # The teacher is the supervised baseline at the student's augmentation (TEACHER_AUG student).
    assert opt(fake.calls[0][1], "FINETUNE.STRONG_AUG") == "True"
    for _, cmd in fake.calls:
        assert os.path.isfile(os.path.join(opt(cmd, "OUTPUT_DIR"), "DONE"))
    # One row per model, APs from each stage's results.csv, pseudo-label counts for students.
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    models = [r["model"] for r in table]
    assert models == ["teacher (supervised)", "student 1", "student 2", "student 3"]
    assert [float(r["bbox AP"]) for r in table] == [2.0, 4.0, 6.0, 8.0]
    assert table[0]["pseudo boxes"] == "" and table[1]["pseudo boxes"] == "14"
    # Each row states its augmentation and schedule: the CPU config's S4 at 288 px, 60
    # iterations of 2 labeled images (+ 2 pseudo-labeled for the students), step lr.
    assert {r["augmentation"] for r in table} == {"S4 at 288 px"}
    assert table[0]["schedule"] == "60 it x 2 img, lr 0.0025 steps (50,)"
    assert table[1]["schedule"] == "60 it x 2 img + 2 pseudo img, lr 0.0025 steps (50,)"
    header = "| model | augmentation | schedule | pseudo images |"
    assert (out / "results.md").read_text().startswith(header)

    # Rerun: every stage is done; only an unfinished one runs again.
    os.remove(out / "iter2" / "student" / "DONE")
    again, _ = run_fake(self_train, monkeypatch, out, "SELF_TRAIN.STUDENT_INIT", init, *extra)
    assert [opt(cmd, "OUTPUT_DIR") for _, cmd in again.calls] == [str(out / "iter2" / "student")]


def test_teacher_at_the_configs_own_augmentation(self_train, repo_root, tmp_path, monkeypatch):
    """SELF_TRAIN.TEACHER_AUG config: the teacher keeps Detectron2's resize and flip, the table
    says so, and the tool warns that the comparison mixes augmentation and self-training."""
    monkeypatch.chdir(repo_root)
    fake, rows = run_fake(
        self_train, monkeypatch, tmp_path, "SELF_TRAIN.TEACHER_AUG", "config", iterations=1
    )
    assert "FINETUNE.STRONG_AUG" not in fake.calls[0][1]
    assert rows[0]["augmentation"] == "resize (224, 256, 288) / 480 + flip"
    assert rows[1]["augmentation"] == "S4 at 288 px"


def test_failed_stage_gets_no_marker_and_bad_keys(self_train, repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)

    def fail(cmd, check):
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(self_train.subprocess, "run", fail)
    args = self_train.parse_args(["--config-file", CPU_CONFIG, "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(subprocess.CalledProcessError):
        self_train.run_pipeline(args)
    assert (tmp_path / "teacher").is_dir() and not (tmp_path / "teacher" / "DONE").exists()
    args = self_train.parse_args(
        ["--config-file", CPU_CONFIG, "OUTPUT_DIR", str(tmp_path), "SELF_TRAIN.STUDENT_INIT", "x"]
    )
    with pytest.raises(ValueError, match="SELF_TRAIN.STUDENT_INIT"):
        self_train.run_pipeline(args)
    args = self_train.parse_args(
        ["--config-file", CPU_CONFIG, "OUTPUT_DIR", str(tmp_path), "SELF_TRAIN.TEACHER_AUG", "x"]
    )
    with pytest.raises(ValueError, match="SELF_TRAIN.TEACHER_AUG"):
        self_train.run_pipeline(args)


def test_tiny_run_killed_during_student_resumes(repo_root, datasets_root, tmp_path):
    out = tmp_path / "run"
    data = val_subset(datasets_root, str(tmp_path / "val_mini.json"))
    cmd = [sys.executable, os.path.join(repo_root, "tools", "self_train.py")]
    cmd += ["--config-file", CPU_CONFIG, *TINY, *data, "OUTPUT_DIR", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(
        cmd, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    student = out / "iter1" / "student"
    deadline = time.time() + 300
    # last_checkpoint is written after the checkpoint it names: wait for it, not the file.
    while not (student / "last_checkpoint").exists() and proc.poll() is None:
        assert time.time() < deadline, "the student never saved a checkpoint"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its stage subprocess
    proc.wait()
    log.close()
    assert (out / "teacher" / "DONE").is_file() and (
        out / "iter1" / "pseudo_labels" / "DONE"
    ).is_file()
    assert not (student / "DONE").exists()
    last = (student / "last_checkpoint").read_text().strip()
    killed_at = torch.load(student / last, map_location="cpu", weights_only=False)["iteration"]
    assert killed_at < 2

    done = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    log = done.stdout + done.stderr
    assert f"{out / 'teacher'}: done, skipped" in log
    assert f"{out / 'iter1' / 'pseudo_labels'}: done, skipped" in log
    assert f"Starting training from iteration {killed_at + 1}" in log
    assert "train_net.py" not in log and "pseudo_label.py --resume" not in log

    # The pseudo-labels: COCO json with the labeled set's categories, masks, both datasets.
    index = json.loads((out / "iter1" / "pseudo_labels" / "index.json").read_text())
    assert set(index) == {"coco128_train", "imagenet_sample_unlabeled"}
    for entry in index.values():
        coco = COCO(entry["json_file"])
        assert len(coco.getImgIds()) == 2 and len(coco.getCatIds()) == 80
        assert coco.dataset["info"]["teacher"] == str(out / "teacher" / "model_final.pth")
        assert all("counts" in a["segmentation"] for a in coco.dataset["annotations"])
    # The student: trained to the end, on both halves, with the normalized loss logged.
    final = torch.load(student / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 2
    assert final["trainer"]["_trainer"]["loss_normalizer"]["avg_human"] > 0
    # SOLVER.CHECKPOINT_MAX_TO_KEEP 1, across the kill too: the newest periodic one is left.
    for stage in (out / "teacher", student):
        assert sorted(p.name for p in stage.glob("model_*.pth")) == [
            "model_0000002.pth",
            "model_final.pth",
        ]
    with open(student / "metrics.json") as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    logged = [m for m in metrics if "loss_ratio" in m]
    assert logged and {"loss_human", "loss_pseudo", "human/loss_cls", "pseudo/loss_mask"} <= set(
        logged[-1]
    )
    # teacher vs student on the test set, from each stage's own evaluation.
    with open(out / "results.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"teacher (supervised)", "student 1"}
    for name, stage in (("teacher (supervised)", out / "teacher"), ("student 1", student)):
        with open(stage / "results.csv") as f:
            own = {r["task"]: r for r in csv.DictReader(f)}
        for task in ("bbox", "segm"):
            assert float(rows[name][f"{task} AP"]) == pytest.approx(float(own[task]["AP"]))
    assert int(rows["student 1"]["pseudo images"]) == 4
    assert int(rows["student 1"]["pseudo boxes"]) == sum(
        e["num_annotations"] for e in index.values()
    )
