"""Image prompts (IP-Adapter): reference pictures whose look and subject carry over into the
picture being made, as diffusers' ``load_ip_adapter`` and ``ip_adapter_image`` do.

Torch-free like the rest of the generation path: the CLIP vision encoder and the adapter's
image projection are ONNX graphs made when they are imported (engine.export.image_encoder,
engine.export.ip_adapter); the UNet that reads the image tokens is the installed model's own
UNet graph with each cross-attention's image branch added by a protobuf edit
(engine.image_prompt.unet_edit), the adapter's key and value weights beside it.
"""
