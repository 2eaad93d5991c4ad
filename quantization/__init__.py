"""Compression: structured pruning (torch-pruning DepGraph), quantization-aware training (torchao
pt2e) and the prune -> fine-tune -> QAT -> export recipe. Heavy libraries are imported lazily."""
