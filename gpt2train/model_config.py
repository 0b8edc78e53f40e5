"""The GPT-2 shapes: llm.c's `-e dN` descriptors, the CPU presets and `custom:` shapes, as a dataclass.

Apart from gpt2train/model.py (which imports torch) so that checking a config's
`model.descriptor` (gpt2train/config_checks.py) stays as light as the rest of config loading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GPT2_VOCAB_SIZE = 50257
PADDED_VOCAB_SIZE = 50304  # llm.c's Vp: 50257 rounded up to a multiple of 128

# llm.c's `-e dN` descriptors (train_gpt2.cu: gpt_build_from_descriptor): depth -> (channels, heads).
DEPTH_SHAPES = {6: (384, 6), 12: (768, 12), 24: (1024, 16), 36: (1280, 20), 48: (1600, 25)}
# Small shapes for CPUs and tests: name -> (layers, channels, heads).
MODEL_PRESETS = {"tiny": (2, 128, 2), "small": (4, 256, 4)}
# Any other GPT-2 shape, named by llm.c's header fields: `custom:L3-NH2-C64`, with `-V<vocab>` and
# `-Vp<padded vocab>` only where they are not GPT-2's (50257, and V rounded up to a multiple of 128).
# What `-e FILE` of another shape becomes (model.descriptor `custom`: gpt2train/config_checks.py).
CUSTOM_PREFIX = "custom:"
_CUSTOM = re.compile(r"custom:L(\d+)-NH(\d+)-C(\d+)(?:-V(\d+))?(?:-Vp(\d+))?")


def padded_vocab(vocab_size: int) -> int:
    """llm.c's Vp: the vocabulary rounded up to a multiple of 128."""
    return -(-vocab_size // 128) * 128


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
        """llm.c's `d12` / `gpt2:d12` (124M), d24 (350M), d36 (774M), d48 (1558M), d6, a preset name,
        or any shape as `custom:L3-NH2-C64[-V50257][-Vp50304]`."""
        if descriptor.startswith(CUSTOM_PREFIX):
            return cls._from_custom(descriptor, block_size)
        if descriptor in MODEL_PRESETS:
            n_layer, n_embd, n_head = MODEL_PRESETS[descriptor]
            return cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)
        name = descriptor.split(":", 1)[1] if descriptor.startswith("gpt2:") else descriptor
        if not (name.startswith("d") and name[1:].isdigit() and int(name[1:]) in DEPTH_SHAPES):
            raise ValueError(f"unknown model descriptor {descriptor!r}; use one of "
                             f"{', '.join(f'd{d}' for d in DEPTH_SHAPES)} (optionally prefixed gpt2:) "
                             f"or a preset: {', '.join(MODEL_PRESETS)}, or any shape as custom:L3-NH2-C64")
        depth = int(name[1:])
        n_embd, n_head = DEPTH_SHAPES[depth]
        return cls(n_layer=depth, n_head=n_head, n_embd=n_embd, block_size=block_size)

    @classmethod
    def _from_custom(cls, descriptor: str, block_size: int) -> "GPTConfig":
        m = _CUSTOM.fullmatch(descriptor)
        if not m:
            raise ValueError(f"model descriptor {descriptor!r} is not custom:L<layers>-NH<heads>-C<channels>, "
                             f"optionally -V<vocab>-Vp<padded vocab>, e.g. custom:L3-NH2-C64")
        n_layer, n_head, n_embd = (int(x) for x in m.group(1, 2, 3))
        vocab = int(m.group(4)) if m.group(4) else GPT2_VOCAB_SIZE
        padded = int(m.group(5)) if m.group(5) else padded_vocab(vocab)
        if min(n_layer, n_head, n_embd) < 1:
            raise ValueError(f"model descriptor {descriptor!r}: L, NH and C must be >= 1")
        if vocab < GPT2_VOCAB_SIZE:  # the shards hold GPT-2's tokens, up to 50256
            raise ValueError(f"model descriptor {descriptor!r}: V={vocab} is smaller than GPT-2's vocabulary "
                             f"({GPT2_VOCAB_SIZE}), whose tokens the shards hold")
        return cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab,
                   padded_vocab_size=padded)

    def descriptor(self) -> str:
        """The name of this shape (block_size aside, which model.block_size holds): llm.c's `dN` or a
        preset's name where it is one of theirs, else `custom:L..-NH..-C..`. from_descriptor reads it back."""
        gpt2_vocab = (self.vocab_size, self.padded_vocab_size) == (GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE)
        if gpt2_vocab and DEPTH_SHAPES.get(self.n_layer) == (self.n_embd, self.n_head):
            return f"d{self.n_layer}"
        for name, shape in MODEL_PRESETS.items():
            if gpt2_vocab and shape == (self.n_layer, self.n_embd, self.n_head):
                return name
        vocab = f"-V{self.vocab_size}" if self.vocab_size != GPT2_VOCAB_SIZE else ""
        padded = f"-Vp{self.padded_vocab_size}" if self.padded_vocab_size != padded_vocab(self.vocab_size) else ""
        return f"{CUSTOM_PREFIX}L{self.n_layer}-NH{self.n_head}-C{self.n_embd}{vocab}{padded}"
