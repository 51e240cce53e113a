"""Worker for the DDP test: ``torchrun --nproc_per_node=2 tests/ddp_worker.py MANIFEST OUT``.

Each rank trains a few steps with gloo, then saves its own copy of the weights so the test can
check that gradient all-reduce kept the replicas identical.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from asr.config import load_config
from asr.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    manifest, out = sys.argv[1], Path(sys.argv[2])
    cfg = load_config(
        ROOT / "asr" / "configs" / "tiny_ctc.yaml",
        {
            "data.train_manifests": [manifest],
            "training.max_steps": 4,
            "training.threads": 1,
            "data.max_batch_seconds": 4,
        },
    )
    trainer = Trainer(cfg, out / "run", progress=False)
    rank = dist.get_rank()
    torch.save({k: v.clone() for k, v in trainer.bundle.model.state_dict().items()}, out / f"initial{rank}.pt")
    trainer.run()
    torch.save(trainer.bundle.model.state_dict(), out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
