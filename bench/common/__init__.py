"""What the benchmarks share: argument and result helpers, the Llama shapes, the FLOPs count, the agreement
benches' prompts and answers. Not benchmarks themselves: nothing here is run on its own."""
