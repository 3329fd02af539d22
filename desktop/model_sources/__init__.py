"""Models the user already has, used where they are: the Hugging Face hub cache and other apps'
model folders (AUTOMATIC1111/Forge, ComfyUI, InvokeAI). Nothing here writes to those folders
or touches the network."""
