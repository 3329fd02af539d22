"""Outpainting: extend the canvas by some pixels on any side and paint the new border.

The picture is set on the larger canvas, the new border filled with its edge colours
(smoothed), and the border is then inpainted (``engine.pipelines.inpaint``), with an
inpainting model or any other. The original picture is kept exactly. An extended canvas
larger than the model's largest native side (the starter's 256 px) is painted, as inpainting
paints it, at that size in the canvas's shape and enlarged (``engine.pipelines.native_size``),
so the border holds one scene rather than copies of the subject.

The sides follow the size rule (``engine.size_rule``): multiples of the model's pixel multiple.
The picture itself may have any size, but a border of whole multiples keeps it on the model's
grid of latent cells, so the new border's cells line up with the picture's, and a picture the
model made grows to a size the model makes (to be made again, outpainted again, reused).
"""

from __future__ import annotations

from dataclasses import replace

from engine.errors import BadRequest
from engine.images import extend_canvas, picture_pixels
from engine.model import Model
from engine.pipelines.diffusion import MAX_SIDE
from engine.pipelines.inpaint import InpaintPipeline, InpaintSettings
from engine.request import GenerationResult, InpaintRequest, OutpaintRequest, ProgressCallback
from engine.runtime import CancelToken
from engine.size_rule import check_side


class OutpaintPipeline:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.inpaint = InpaintPipeline(model)

    def __call__(
        self,
        request: OutpaintRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        # 1. Check the extension, fill the new border and make it the mask.
        inpaint_request = self.prepare_canvas(request)
        # 2. Inpaint the border.
        result = self.inpaint(inpaint_request, on_progress, cancel)
        extend = (request.left, request.top, request.right, request.bottom)
        images = tuple(replace(image, parameters=replace(
            image.parameters, operation="outpaint", extend=extend)) for image in result.images)
        return replace(result, images=images)

    def check_inputs(self, request: OutpaintRequest) -> InpaintSettings:
        return self.inpaint.check_inputs(self.prepare_canvas(request))

    def prepare_canvas(self, request: OutpaintRequest) -> InpaintRequest:
        """The inpainting request of the extended canvas, after checking the extension."""
        picture = picture_pixels(request.image, MAX_SIDE)
        sides = {"left": request.left, "top": request.top, "right": request.right,
                 "bottom": request.bottom}
        for side, value in sides.items():
            check_side(self.model.description, self.model.name, f"{side} side", value,
                       allow_zero=True)
        if not any(sides.values()):
            raise BadRequest("Say how many pixels to add on at least one side of the picture.")
        height, width = picture.shape[:2]
        new_width, new_height = width + request.left + request.right, (
            height + request.top + request.bottom)
        if max(new_width, new_height) > MAX_SIDE:
            raise BadRequest(f"Extended that far the picture would be {new_width}×{new_height} "
                             f"pixels; Easel makes pictures up to {MAX_SIDE} pixels a side.")
        canvas, mask = extend_canvas(picture, request.left, request.top, request.right,
                                     request.bottom)
        return InpaintRequest(
            image=canvas, mask=mask, prompt=request.prompt,
            negative_prompt=request.negative_prompt, strength=request.strength,
            feather=request.feather, steps=request.steps, guidance=request.guidance,
            scheduler=request.scheduler, seed=request.seed, count=request.count,
            noise=request.noise, generator=request.generator, emphasis=request.emphasis,
            loras=request.loras, embeddings=request.embeddings)
