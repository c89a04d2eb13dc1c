"""Small pieces every package uses: atomic files and folders (`utils.atomic`) and the one home of
private APIs of torch, accelerate, transformers and bitsandbytes (`utils.compat`)."""
