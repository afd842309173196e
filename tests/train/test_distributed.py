from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from pushforward.train import fit, latest_checkpoint
from tests.train.models import small_flow, toy_data

OPTIONS = dict(
    steps=20,
    batch_size=64,
    lr=3e-3,
    warmup=5,
    ema=0.9,
    validation=0.2,
    eval_every=10,
    seed=4,
    quiet=True,
)


def _worker(rank: int, world: int, directory: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=world
    )
    try:
        # Rank 1 starts from other weights: DDP must broadcast rank 0's.
        model = small_flow(seed=rank)
        fit(
            model,
            toy_data(),
            checkpoint_dir=f"{directory}/checkpoints/{rank}",
            checkpoint_every=10,
            **OPTIONS,
        )
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            f"{directory}/rank{rank}.safetensors",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # Only rank 0 writes checkpoints.
    assert latest_checkpoint(tmp_path / "checkpoints" / "0") is not None
    assert not (tmp_path / "checkpoints" / "1").exists()

    single = small_flow(seed=0)
    fit(single, toy_data(), **OPTIONS)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=1e-5)
