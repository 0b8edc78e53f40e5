"""`gpt2train sample SOURCE`: text from a checkpoint, an export, or any Hugging Face GPT-2 directory
(after nanoGPT's sample.py and litgpt's `generate`).

    gpt2train sample data/runs/<run>/checkpoints/step_00000040
    gpt2train sample data/exports/<run>@step_00000040 --prompt "The meaning of life is" -n 3 --tokens 64
    gpt2train sample ./gpt2 --temperature 0.8 --top-k 200 --seed 7      # a save_pretrained GPT-2

Sample i is drawn on its own generator seeded `seed + i`, from `<|endoftext|>` then the prompt.
Without a prompt, sample 0 with the run's `train.seed`, top-k 40 and temperature 1 is the text the
training loop logged for that checkpoint ("sample at step N": training/evals.py calls `sample`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gpt2train.data.tokenizer import EOT_TOKEN, get_encoding
from gpt2train.errors import Gpt2TrainError
from gpt2train.model import GPT, GPTConfig

# GPT2Config settings our model computes the same way (tanh-GELU, LayerNorm eps, tied embeddings).
HF_GELU = ("gelu_new", "gelu_pytorch_tanh")


def load_model(source: str | Path) -> tuple[GPT, str]:
    """(our GPT in eval mode on the CPU, a line saying what it is) from a complete checkpoint
    directory (state.json) or a Hugging Face GPT-2 directory (config.json + model.safetensors, as
    `gpt2train export` and `save_pretrained` write them)."""
    path = Path(source)
    if (path / "state.json").is_file():
        from gpt2train.export.hf_export import read_checkpoint

        ck = read_checkpoint(path)
        return ck.model, f"checkpoint {path} (step {ck.state['step']}, {ck.state['config']['model']['descriptor']})"
    if (path / "config.json").is_file():
        return _load_hf_dir(path)
    raise Gpt2TrainError(f"{source}: neither a checkpoint directory (state.json) nor a Hugging Face GPT-2 "
                         f"directory (config.json); give a …/checkpoints/step_XXXXXXXX, an export, or a "
                         f"save_pretrained folder")


def _load_hf_dir(path: Path) -> tuple[GPT, str]:
    from safetensors.torch import load_file

    from gpt2train.export.state_dict import from_hf_state_dict

    try:
        hf = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise Gpt2TrainError(f"{path / 'config.json'}: not readable JSON ({e}); save the model again") from e
    if hf.get("model_type") != "gpt2" or hf.get("activation_function", "gelu_new") not in HF_GELU \
            or hf.get("n_inner") not in (None, 4 * hf.get("n_embd", 0)):
        raise Gpt2TrainError(f"{path / 'config.json'}: model_type={hf.get('model_type')!r}, activation_function="
                             f"{hf.get('activation_function')!r}, n_inner={hf.get('n_inner')!r}: only GPT-2 "
                             f"(gpt2, tanh-GELU, n_inner 4*n_embd) can be loaded into gpt2train's model")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise Gpt2TrainError(f"{path}: no model.safetensors (save it with safe_serialization=True, the default)")
    vocab = hf.get("vocab_size", 50257)
    cfg = GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], block_size=hf["n_positions"],
                    vocab_size=vocab, padded_vocab_size=max(vocab, -(-vocab // 128) * 128))
    try:
        model = from_hf_state_dict(load_file(weights), cfg)
    except (KeyError, RuntimeError) as e:
        raise Gpt2TrainError(f"{weights}: not the GPT-2 config.json describes ({e})") from e
    n = f"{model.num_params():,}"
    return model.eval(), f"Hugging Face GPT-2 {path} ({cfg.n_layer} layers, {cfg.n_embd} wide, {n} parameters)"


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
