"""Blend a training checkpoint with the shipped weights, and write the result as a model folder.

A fine-tuning chunk that teaches one thing (prompts without positions) can cost another
(layout regions, placed objects). Both weights come from the same training run, so every
weight on the straight line between them is a working model: a fraction of the way from the
shipped weights towards the checkpoint keeps most of the old skill and some of the new one.
``python -m engine.starter.evaluate`` decides which fraction, if any, is shipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from engine.starter.training.export import (
    TRAINING_RECORD,
    export_starter,
    model_from_checkpoint,
    read_shipped_weights,
)
from engine.starter.training.train import DEFAULT_WORK, SHIPPED, trainer_record_fields


def blend_weights(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                  fraction: float) -> dict[str, torch.Tensor]:
    """``base`` moved ``fraction`` of the way towards ``tuned``, weight by weight."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the fraction must be between 0 and 1, not {fraction}")
    if set(base) != set(tuned):
        missing = sorted(set(base) ^ set(tuned))
        raise ValueError(f"the two sets of weights differ, e.g. in {missing[0]}")
    return {name: torch.lerp(base[name].float(), tuned[name].float(), fraction)
            for name in base}


def blend(checkpoint: Path, fraction: float, destination: Path,
          base_folder: Path = SHIPPED) -> dict:
    """Write the blend of ``checkpoint``'s averaged weights and ``base_folder``'s weights to
    ``destination``; returns the training record written beside it."""
    model, config, record = model_from_checkpoint(checkpoint)
    base, base_record = read_shipped_weights(base_folder)
    model.load_state_dict(blend_weights(base, model.state_dict(), fraction))
    record = {
        **trainer_record_fields(record), **record,
        "blend": {
            "fraction_of_checkpoint": fraction,
            "checkpoint_step": record["steps"],
            "base_step": base_record["steps"],
            "command": (f"python -m engine.starter.training.blend --checkpoint CHECKPOINT "
                        f"--fraction {fraction}"),
        },
    }
    export_starter(model, config, destination, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a blend of a training checkpoint and the shipped starter weights "
                    "as a model folder, to evaluate before shipping.")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_WORK / "checkpoint.pt",
                        help="a checkpoint.pt or a snapshots/ema-*.pt file")
    parser.add_argument("--fraction", type=float, required=True,
                        help="how far towards the checkpoint: 0 is the shipped weights, "
                             "1 the checkpoint")
    parser.add_argument("--base", type=Path, default=SHIPPED,
                        help="the model folder to blend from (default: the shipped starter)")
    parser.add_argument("--to", type=Path, required=True, help="the model folder to write")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"there is no checkpoint at {args.checkpoint}")
    if not (args.base / TRAINING_RECORD).is_file():
        parser.error(f"{args.base} is not a starter model folder (it has no {TRAINING_RECORD})")
    try:
        record = blend(args.checkpoint, args.fraction, args.to, args.base)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {args.fraction:g} of the way from step {record['blend']['base_step']} "
          f"to step {record['steps']} to {args.to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
