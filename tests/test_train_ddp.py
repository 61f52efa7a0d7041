"""DDP: two CPU processes (gloo, torchrun) train a few steps and end with identical weights."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import torch

from ccdm_core.tensorfile import read_tensors
from train.synthetic import write_synthetic_videos

WORKER = textwrap.dedent("""
    import json, os, sys
    from safetensors.torch import save_file
    from train.config import TrainConfig
    from train.loop import fit

    data, out = sys.argv[1], sys.argv[2]
    cfg = TrainConfig(base="default", data=data, out=out, steps=3, size=64, frames=8, stride=1, batch_size=1,
                      workers=0, device="cpu", lr=1e-3, warmup=0, save_every=3, validate_every=0, lambda2=0.5,
                      keyframe_prob=1.0)
    result = fit(cfg, progress=False)
    rank = int(os.environ["RANK"])
    state = {k: v.contiguous() for k, v in result.trainables.state_dict().items()}
    save_file(state, os.path.join(out, f"rank{rank}.safetensors"))
    if rank == 0:
        print("SUMMARY " + json.dumps(result.summary))
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    data = tmp_path / "data"
    write_synthetic_videos(data, count=4, frames=10, size=64)
    (data / "zz_corrupt.mp4").write_bytes(b"\x00 broken " * 50)
    out = tmp_path / "run"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(data), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("SUMMARY"))[8:])
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert summary["skipped_videos"] == 1  # found by whichever rank read it, counted once
    a, _ = read_tensors(out / "rank0.safetensors")
    b, _ = read_tensors(out / "rank1.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = [k for k in a if k.endswith("proj_out.weight")]
    assert any(a[k].abs().sum() > 0 for k in fresh)  # trained: the zero-initialised outputs moved
    state = json.loads((out / "states" / "step-00000003" / "state.json").read_text(encoding="utf-8"))
    assert len(state["cursors"]) == 2
