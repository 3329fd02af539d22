"""The README's sample sheet: twelve starter-model pictures in one PNG, made through the engine.

    python -m engine.starter.samples --to resources/docs/starter-samples.png

The prompts are fixed and include two-object scenes (the hard case) and, on the last row,
prompts that name no position (issue 14), so a sheet made from new weights can be compared with
the last one at a glance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from engine.model import load_model
from engine.pipelines.text_to_image import TextToImagePipeline
from engine.request import TextToImageRequest
from engine.runtime import RuntimeOptions

REPOSITORY = Path(__file__).resolve().parents[2]
SHIPPED = REPOSITORY / "resources" / "models" / "starter"

PROMPTS = (
    "an avocado on the left, on a blue background",
    "a big dog in the centre, on a yellow background",
    "a rocket at the top, on a black background",
    "a small horse on the right, on a green background",
    "an astronaut at the bottom, on a pink background",
    "a moon on the left and a tree on the right, on a black background",
    "a rocket at the top and a house at the bottom, on a white background",
    "a chair on the left and a sunflower on the right, on a purple background",
    "a cat on a green background",
    "a dog",
    "a cat and a dog on a green background",
    "a rocket",
)


def sample_sheet(folder: Path, seed: int = 1, tile: int = 160, columns: int = 4) -> Image.Image:
    """The prompts at ``seed``, ``tile`` px each, in a grid."""
    pipeline = TextToImagePipeline(load_model(folder, RuntimeOptions(providers=("cpu",))))
    rows = -(-len(PROMPTS) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile))
    for index, prompt in enumerate(PROMPTS):
        pixels = pipeline(TextToImageRequest(prompt, seed=seed)).images[0].pixels
        picture = Image.fromarray(pixels).resize((tile, tile), Image.Resampling.NEAREST)
        sheet.paste(picture, ((index % columns) * tile, (index // columns) * tile))
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED, help="a starter model folder")
    parser.add_argument("--to", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sample_sheet(args.model, args.seed).save(args.to, optimize=True)
    print(f"wrote {args.to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
