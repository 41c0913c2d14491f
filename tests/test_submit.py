"""tools/submit.py: a pretraining submitted through submitit's local executor, 2 tasks on a CPU."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from test_pretrain_net import TINY

from detpre.engine.slurm import SubmittedTool, submission_environment


def test_submission_environment_is_torchruns():
    job = SimpleNamespace(
        job_id="123456_7", global_rank=9, num_tasks=16, local_rank=1, num_nodes=2,
        hostnames=["node-a", "node-b"],
    )  # fmt: skip
    assert submission_environment(job) == {
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "node-a",
        "MASTER_PORT": str(20000 + 1234567 % 20000),
    }


def test_checkpoint_requeues_with_resume_once(repo_root):
    tool = os.path.join(repo_root, "tools", "pretrain_net.py")
    submitted = SubmittedTool(tool, ["--config-file", "a.yaml", "OUTPUT_DIR", "/out"])
    again = submitted.checkpoint().function
    assert again.argv == ["--resume", "--config-file", "a.yaml", "OUTPUT_DIR", "/out"]
    assert again.checkpoint().function.argv == again.argv and again.output_dir() == "/out"
    with pytest.raises(ValueError, match="--num-gpus"):
        SubmittedTool(tool, ["--num-gpus", "8"])
    with pytest.raises(ValueError, match="--stage student"):
        SubmittedTool(os.path.join(repo_root, "tools", "self_train.py"), ["--config-file", "a"])
    SubmittedTool(os.path.join(repo_root, "tools", "self_train.py"), ["--stage", "student"])
    with pytest.raises(ValueError, match="submit one of"):
        SubmittedTool(os.path.join(repo_root, "tools", "convert_pretrained.py"), [])


def test_local_submission_pretrains_on_two_tasks(repo_root, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(repo_root, "tools", "submit.py"), "--cluster", "local"]
    cmd += ["--gpus-per-node", "2", "--cpus-per-task", "1", "--time", "20", "--wait"]
    cmd += [os.path.join(repo_root, "tools", "pretrain_net.py"), "--config-file"]
    cmd += [os.path.join(repo_root, "configs/pretrain/moco_v2_R50_FPN_cpu_imagenet_sample.yaml")]
    cmd += TINY + ["SOLVER.MAX_ITER", "2", "MOCO.CROP_SIZE", "64", "SSL.BN_GROUPS", "1"]
    cmd += ["OUTPUT_DIR", str(out)]
    done = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=900)
    logs = sorted((out / "submitit").glob("*_log.*"))
    tails = "".join(p.read_text()[-2000:] for p in logs)
    assert done.returncode == 0, done.stderr[-3000:] + tails
    assert f"finished: {out}" in done.stdout
    # Two tasks, one process group: the keys of both ranks in the queue, 4 per iteration.
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert int(final["model"]["queues.res5.ptr"]) == 8
    assert (out / "model_final_d2.pth").exists()
    # submitit's logs of both tasks beside OUTPUT_DIR's own.
    assert {p.name.split("_")[1] for p in logs if p.name.endswith("_log.out")} == {"0", "1"}
    assert any("World size: 2" in p.read_text() for p in logs)
