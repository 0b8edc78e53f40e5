"""The GPT-2 shapes: llm.c's `-e dN` descriptors and the CPU presets, as a dataclass.

Apart from gpt2train/model.py (which imports torch) so that checking a config's
`model.descriptor` (gpt2train/config_checks.py) stays as light as the rest of config loading.
"""

from __future__ import annotations

from dataclasses import dataclass

GPT2_VOCAB_SIZE = 50257
PADDED_VOCAB_SIZE = 50304  # llm.c's Vp: 50257 rounded up to a multiple of 128

# llm.c's `-e dN` descriptors (train_gpt2.cu: gpt_build_from_descriptor): depth -> (channels, heads).
DEPTH_SHAPES = {6: (384, 6), 12: (768, 12), 24: (1024, 16), 36: (1280, 20), 48: (1600, 25)}
# Small shapes for CPUs and tests: name -> (layers, channels, heads).
MODEL_PRESETS = {"tiny": (2, 128, 2), "small": (4, 256, 4)}


@dataclass
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # max sequence length T
    vocab_size: int = GPT2_VOCAB_SIZE
    padded_vocab_size: int = PADDED_VOCAB_SIZE

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(f"padded_vocab_size={self.padded_vocab_size} < vocab_size={self.vocab_size}")

    @classmethod
    def from_descriptor(cls, descriptor: str, block_size: int = 1024) -> "GPTConfig":
        """llm.c's `d12` / `gpt2:d12` (124M), d24 (350M), d36 (774M), d48 (1558M), d6, or a preset name."""
        if descriptor in MODEL_PRESETS:
            n_layer, n_embd, n_head = MODEL_PRESETS[descriptor]
            return cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)
        name = descriptor.split(":", 1)[1] if descriptor.startswith("gpt2:") else descriptor
        if not (name.startswith("d") and name[1:].isdigit() and int(name[1:]) in DEPTH_SHAPES):
            raise ValueError(f"unknown model descriptor {descriptor!r}; use one of "
                             f"{', '.join(f'd{d}' for d in DEPTH_SHAPES)} (optionally prefixed gpt2:) "
                             f"or a preset: {', '.join(MODEL_PRESETS)}")
        depth = int(name[1:])
        n_embd, n_head = DEPTH_SHAPES[depth]
        return cls(n_layer=depth, n_head=n_head, n_embd=n_embd, block_size=block_size)
