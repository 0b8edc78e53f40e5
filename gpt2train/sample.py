"""`gpt2train sample SOURCE`: text from a checkpoint, an export, any Hugging Face GPT-2 directory or
an llm.c model file (gpt2train/weights.py loads them; after nanoGPT's sample.py and litgpt's `generate`).

    gpt2train sample data/runs/<run>/checkpoints/step_00000040
    gpt2train sample data/exports/<run>@step_00000040 --prompt "The meaning of life is" -n 3 --tokens 64
    gpt2train sample ./gpt2 --temperature 0.8 --top-k 200 --seed 7      # a save_pretrained GPT-2

Sample i is drawn on its own generator seeded `seed + i`, from `<|endoftext|>` then the prompt,
with the model's KV cache (GPT.generate). A seed gives the same text for the same weights on the same
device and torch version; another device (CPU vs a GPU) may round the logits differently and, rarely,
draw another token. Eval reports record the device their sample was drawn on (evals/report_extras.py).
Without a prompt, sample 0 with the run's `train.seed`, top-k 40 and temperature 1 is the text the
training loop logged for that checkpoint ("sample at step N": training/evals.py calls `sample`).
"""

from __future__ import annotations

import torch

from gpt2train.data.tokenizer import EOT_TOKEN, get_encoding
from gpt2train.model import GPT

@torch.no_grad()
def sample(model: GPT, prompt: str = "", num_samples: int = 1, tokens: int = 64, temperature: float = 1.0,
           top_k: int | None = 40, seed: int = 1337, device: str = "cpu") -> list[str]:
    """`num_samples` continuations of `prompt` (from <|endoftext|>), each `tokens` long, the prompt
    included in the text. The model's mode and the global RNG are left as they were."""
    enc = get_encoding("gpt2")
    start = [EOT_TOKEN, *enc.encode_ordinary(prompt)]
    was_training = model.training
    model.eval()
    texts = []
    for i in range(num_samples):
        gen = torch.Generator(device=device).manual_seed(seed + i)
        out = model.generate(torch.tensor([start], device=device), tokens, temperature=temperature, top_k=top_k,
                             generator=gen)
        texts.append(enc.decode(out[0, 1:].tolist()))
    model.train(was_training)
    return texts
