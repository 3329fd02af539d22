"""How the starter model's figures grew with training time: evaluate every snapshot.

    python -m engine.starter.training.curve [--count 60]

Training keeps the averaged weights every 30 minutes of training in ``snapshots/``; each is
exported to a scratch folder and measured by ``engine.starter.evaluate`` on the same held-out
prompts. Results are added to ``curve.json`` in the work folder (snapshots already measured
with the same count are skipped).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from engine.starter.evaluate import evaluate
from engine.starter.training.export import export_starter, model_from_checkpoint
from engine.starter.training.train import DEFAULT_WORK, trainer_record_fields

COLUMNS = ("one_object", "position", "left_right_both", "top_bottom_both", "colour")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--count", type=int, default=60)
    args = parser.parse_args(argv)
    results_path = args.work / "curve.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for snapshot in sorted((args.work / "snapshots").glob("ema-*.pt")):
        key = f"{snapshot.name}|{args.count}"
        if key not in results:
            model, config, record = model_from_checkpoint(snapshot)
            with tempfile.TemporaryDirectory() as scratch:
                folder = Path(scratch) / "starter"
                export_starter(model, config, folder, trainer_record_fields(record))
                figures = evaluate(folder, args.count)
            results[key] = {**figures, "hours": record["training_seconds"] / 3600,
                            "training_steps": record["steps"]}
            results_path.write_text(json.dumps(results, indent=2) + "\n")
        row = results[key]
        print(f"{row['hours']:5.2f} h  step {row['training_steps']:6d}  "
              + "  ".join(f"{name} {row[name]:.0%}" for name in COLUMNS), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
