"""ControlNet: control pictures, the ControlNet graph's residuals and the UNet that takes them."""
