"""Where a GPT-2's weights can come from: our checkpoints, Hugging Face GPT-2 directories, llm.c model files.

    model, what = load_model(source)     # our GPT (eval mode, fp32, CPU) and a line saying what it is
    state = load_state_dict(source)      # just its weights, under our names (train.init_from)
    cfg = source_shape(source)           # its shape only, without reading the weights (config checks)

A source is one of:
- a complete checkpoint directory of ours (state.json, model.safetensors);
- a Hugging Face GPT-2 directory (config.json + model.safetensors): an export of ours, or any
  `save_pretrained` GPT2LMHeadModel such as OpenAI's GPT-2 (export/state_dict.py adapts the names);
- a Hugging Face Hub model id, `hf:openai-community/gpt2[@revision]`: its cached snapshot, fetched
  first if need be (gpt2train/hub_models.py);
- an llm.c model file (`gpt2_124M.bin`, `gpt2_124M_bf16.bin`, what llm.c's `-e` reads and its
  checkpoints write): a 256-int32 header (magic 20240326, version 3 = fp32 or 5 = bf16, maxT, V, L,
  NH, C, Vp), then every parameter in llm.c's order (LLMC_PARAMETERS), Linear weights (out, in) as ours.

Any GPT-2 shape loads, as llm.c builds its model from the header: `source_shape` gives it, and its
`descriptor()` (`d12`, a preset's name, or `custom:L3-NH2-C64`) is what a config records for it.

`train.init_from` (llm.c's `-e FILE`), `gpt2train sample` and `gpt2train eval` read them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from gpt2train.hub_models import hub_model_dir, is_hub_model
from gpt2train.layout import CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, HF_CONFIG, HF_WEIGHTS
from gpt2train.model_config import GPTConfig, padded_vocab
from gpt2train.training.checkpoint import CheckpointState, load_checkpoint

if TYPE_CHECKING:
    import torch

    from gpt2train.model import GPT

# torch (and the model) are imported where weights are read: `weights_sha256` and `source_shape` are
# read by the Dagster code location, which every run worker imports, and torch's import costs ~3.5 s.

LLMC_MAGIC = 20240326
LLMC_DTYPES = {3: np.float32, 5: np.uint16}  # header version -> stored dtype (5: bf16 bits)
LLMC_HEADER_INTS = 256
# llm.c's other files open with a 256-int header too: what each magic is (llm.c's writers), so `-e` given
# one of them says which file it was handed instead of only that it is not a model.
LLMC_OTHER_FILES = {
    20240327: "llm.c's debug state file (train_gpt2.py's gpt2_124M_debug_state.bin: a batch and its expected outputs)",
    20240328: "llm.c's tokenizer file (gpt2_tokenizer.bin)",
    20240520: "a GPT-2 token shard (llm.c's data .bin)",
    20240522: "an llm.c eval file (dev/data's hellaswag_val.bin, mmlu_val.bin)",
    20240527: "an llm.c training-state file (train_gpt2cu's state_*.bin: optimizer state; its weights are the "
              "model_*.bin beside it)",
    20240801: "a Llama 3 token shard",
    20240803: "a Llama 3 file (llm.c's train_llama3.py)",
}
# llm.c's parameter order (train_gpt2.c: fill_in_parameter_sizes): (our name with {} for the layer,
# shape as a function of (Vp, maxT, L, C)); per-layer tensors are stored for all layers in a row.
LLMC_PARAMETERS = [
    ("transformer.wte.weight", lambda Vp, T, C: (Vp, C)),
    ("transformer.wpe.weight", lambda Vp, T, C: (T, C)),
    ("transformer.h.{}.ln_1.weight", lambda Vp, T, C: (C,)),
    ("transformer.h.{}.ln_1.bias", lambda Vp, T, C: (C,)),
    ("transformer.h.{}.attn.c_attn.weight", lambda Vp, T, C: (3 * C, C)),
    ("transformer.h.{}.attn.c_attn.bias", lambda Vp, T, C: (3 * C,)),
    ("transformer.h.{}.attn.c_proj.weight", lambda Vp, T, C: (C, C)),
    ("transformer.h.{}.attn.c_proj.bias", lambda Vp, T, C: (C,)),
    ("transformer.h.{}.ln_2.weight", lambda Vp, T, C: (C,)),
    ("transformer.h.{}.ln_2.bias", lambda Vp, T, C: (C,)),
    ("transformer.h.{}.mlp.c_fc.weight", lambda Vp, T, C: (4 * C, C)),
    ("transformer.h.{}.mlp.c_fc.bias", lambda Vp, T, C: (4 * C,)),
    ("transformer.h.{}.mlp.c_proj.weight", lambda Vp, T, C: (C, 4 * C)),
    ("transformer.h.{}.mlp.c_proj.bias", lambda Vp, T, C: (C,)),
    ("transformer.ln_f.weight", lambda Vp, T, C: (C,)),
    ("transformer.ln_f.bias", lambda Vp, T, C: (C,)),
]
# GPT2Config settings our model computes the same way (tanh-GELU, 4C MLP).
HF_GELU = ("gelu_new", "gelu_pytorch_tanh")


@dataclass
class LoadedCheckpoint:
    path: Path
    model: GPT                  # fp32, eval mode, on the CPU
    state: CheckpointState      # its state.json
    model_sha256: str           # sha256 of the checkpoint's weights file


def read_checkpoint(checkpoint_dir: str | Path) -> LoadedCheckpoint:
    """Our GPT from a complete checkpoint, with errors that say what is wrong with the directory."""
    path = Path(checkpoint_dir).absolute()
    state = CheckpointState.from_dir(path, verify_hash=True)
    state_file, step = path / CHECKPOINT_STATE, state.step
    descriptor, block_size = state.config.model.descriptor, state.config.model.block_size
    lacking = [name for name, value in (("step", step), ("config.model.descriptor", descriptor),
                                        ("config.model.block_size", block_size)) if value is None]
    if lacking:
        raise Gpt2TrainError(f"{state_file} lacks {' and '.join(lacking)}: not a gpt2train checkpoint's state")
    try:
        cfg = GPTConfig.from_descriptor(descriptor, int(block_size))
    except (TypeError, ValueError) as e:  # TypeError: a block_size that is no number
        raise Gpt2TrainError(f"{state_file}: config.model: {e}") from e
    if not isinstance(step, int):
        raise Gpt2TrainError(f"{state_file}: step is {step!r}, not an integer")
    model_sha256 = state.model_sha256
    try:
        weights = load_checkpoint(path, weights_only=True)["model"]
    except KeyError as e:  # load_checkpoint ties lm_head to transformer.wte.weight
        raise Gpt2TrainError(f"checkpoint {path}: {CHECKPOINT_WEIGHTS} has no {e} weight: not a GPT-2") from e
    except Exception as e:  # safetensors raises its own error type on a truncated or corrupt file
        raise Gpt2TrainError(f"checkpoint {path}: {CHECKPOINT_WEIGHTS} cannot be read ({type(e).__name__}: {e}); "
                             f"export another checkpoint") from e

    import torch

    from gpt2train.model import GPT

    # Built on the meta device (no memory, no init): only the shapes matter until the weights land.
    with torch.device("meta"):
        model = GPT(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [f"{k} {tuple(weights[k].shape)} (expected {s})" for k, s in expected.items()
             if k in weights and tuple(weights[k].shape) != s]
    if missing or unexpected or wrong:
        problems = "; ".join(part for part in (
            f"missing {', '.join(missing[:5])}" if missing else "",
            f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
            f"wrong shapes {', '.join(wrong[:5])}" if wrong else "") if part)
        raise Gpt2TrainError(
            f"checkpoint {path}: {CHECKPOINT_WEIGHTS} is not the GPT-2 {CHECKPOINT_STATE} describes (config.model "
            f"descriptor={descriptor!r}, block_size={block_size}: n_layer={cfg.n_layer}, n_head={cfg.n_head}, "
            f"n_embd={cfg.n_embd}): {problems}. The checkpoint is damaged or its {CHECKPOINT_STATE} does not "
            f"belong to it")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True gave them separate Parameters
    return LoadedCheckpoint(path=path, model=model.eval(), state=state, model_sha256=model_sha256)


def local_source(source: str | Path) -> Path:
    """The local path of `source`: a Hub id `hf:<repo>[@<revision>]` becomes its cached snapshot."""
    return hub_model_dir(source) if is_hub_model(source) else Path(source)


def kind_of(source: str | Path) -> str:
    """`checkpoint`, `hf` or `llmc`; an error naming what was expected otherwise."""
    path = Path(source)
    if not path.exists():
        raise Gpt2TrainError(f"{source} does not exist; give a complete checkpoint (…/checkpoints/step_XXXXXXXX), "
                             f"a Hugging Face GPT-2 directory, a Hub id hf:<owner>/<name> or an llm.c model file")
    if (path / CHECKPOINT_STATE).is_file():
        return "checkpoint"
    if (path / HF_CONFIG).is_file():
        return "hf"
    found = ""
    if path.is_file():
        if _llmc_header(path, check=False) is not None:
            return "llmc"
        found = f"; {_llmc_header_found(path)}"
    raise Gpt2TrainError(f"{source}: neither a checkpoint directory ({CHECKPOINT_STATE}), a Hugging Face GPT-2 "
                         f"directory ({HF_CONFIG}) nor an llm.c model file (header magic {LLMC_MAGIC}, version 3 or 5"
                         f"{found}); give a …/checkpoints/step_XXXXXXXX, an export or save_pretrained folder, "
                         f"hf:<owner>/<name>, or a gpt2_124M.bin")


def source_shape(source: str | Path) -> GPTConfig:
    """The model shape `source` holds, read from its metadata only."""
    path = local_source(source)
    kind = kind_of(path)
    if kind == "checkpoint":
        saved = CheckpointState.from_dir(path).config.model
        problem = "no descriptor" if saved.descriptor is None else "no block_size" if saved.block_size is None else ""
        try:
            if not problem:
                return GPTConfig.from_descriptor(saved.descriptor, int(saved.block_size))
        except (TypeError, ValueError) as e:
            problem = f"{type(e).__name__}: {e}"
        raise Gpt2TrainError(f"{path}: its {CHECKPOINT_STATE} has no usable config.model ({problem}); "
                             f"use a checkpoint gpt2train wrote") from None
    if kind == "hf":
        if not (path / HF_WEIGHTS).is_file():
            raise Gpt2TrainError(f"{path}: no {HF_WEIGHTS} (save it with safe_serialization=True, the default)")
        return _hf_shape(path)
    return _llmc_layout(path, _llmc_header(path))[0]


def weights_sha256(source: str | Path) -> str:
    """The sha256 of the weights `source` holds: a checkpoint's recorded model_sha256, else the hash of
    the weights file (model.safetensors, or the llm.c file itself)."""
    path = local_source(source)
    kind = kind_of(path)
    if kind == "checkpoint":
        return CheckpointState.from_dir(path).model_sha256
    return sha256_file(path / HF_WEIGHTS if kind == "hf" else path)


def load_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """The weights of `source` under our parameter names, for a model already built (train.init_from):
    a checkpoint's and an llm.c file's read as they are, without building a second model."""
    path = local_source(source)
    kind = kind_of(path)
    if kind == "checkpoint":
        return load_checkpoint(path, rank=0, weights_only=True)["model"]
    return _load_hf(path).state_dict() if kind == "hf" else _llmc_state_dict(path)


def load_model(source: str | Path) -> tuple[GPT, str]:
    """(our GPT in eval mode, fp32 on the CPU, a line saying what was loaded) from any source."""
    path = local_source(source)
    kind = kind_of(path)
    if kind == "checkpoint":
        ck = read_checkpoint(path)
        return ck.model, f"checkpoint {path} (step {ck.state.step}, {ck.state.config.model.descriptor})"
    model = _load_hf(path) if kind == "hf" else _load_llmc(path)
    c = model.config
    what = "Hugging Face GPT-2" if kind == "hf" else "llm.c model file"
    return model.eval(), f"{what} {path} ({c.n_layer} layers, {c.n_embd} wide, {model.num_params():,} parameters)"


def _hf_shape(path: Path) -> GPTConfig:
    try:
        hf = json.loads((path / HF_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise Gpt2TrainError(f"{path / HF_CONFIG}: not readable JSON ({e}); save the model again") from e
    if hf.get("model_type") != "gpt2" or hf.get("activation_function", "gelu_new") not in HF_GELU \
            or hf.get("n_inner") not in (None, 4 * hf.get("n_embd", 0)):
        raise Gpt2TrainError(f"{path / HF_CONFIG}: model_type={hf.get('model_type')!r}, activation_function="
                             f"{hf.get('activation_function')!r}, n_inner={hf.get('n_inner')!r}: only GPT-2 "
                             f"(gpt2, tanh-GELU, n_inner 4*n_embd) can be loaded into gpt2train's model")
    vocab = hf.get("vocab_size", 50257)
    try:
        return GPTConfig(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                         block_size=hf["n_positions"], vocab_size=vocab, padded_vocab_size=padded_vocab(vocab))
    except (KeyError, TypeError, ValueError) as e:
        raise Gpt2TrainError(f"{path / HF_CONFIG}: not a GPT-2 shape ({type(e).__name__}: {e}); n_layer, n_head, "
                             f"n_embd and n_positions must be numbers, n_embd a multiple of n_head") from None


def _load_hf(path: Path) -> GPT:
    from safetensors.torch import load_file

    from gpt2train.export.state_dict import from_hf_state_dict

    cfg = _hf_shape(path)
    weights = path / HF_WEIGHTS
    if not weights.is_file():
        raise Gpt2TrainError(f"{path}: no {HF_WEIGHTS} (save it with safe_serialization=True, the default)")
    try:
        return from_hf_state_dict(load_file(weights), cfg)
    except (KeyError, RuntimeError) as e:
        raise Gpt2TrainError(f"{weights}: not the GPT-2 {HF_CONFIG} describes ({e})") from e


def _read_header(path: Path) -> np.ndarray | None:
    """The 256-int32 header llm.c's files open with; None for a file shorter than that."""
    with open(path, "rb") as f:
        raw = f.read(LLMC_HEADER_INTS * 4)
    return np.frombuffer(raw, dtype=np.int32) if len(raw) == LLMC_HEADER_INTS * 4 else None


def _llmc_header(path: Path, check: bool = True) -> np.ndarray | None:
    """The header of an llm.c model file; None if it is not one, or with `check` an error in one line
    that names the file, the magic and version it holds and what a GPT-2 model file holds. Another llm.c
    file (a shard, a tokenizer, a training state) and a model file of another version are errors with
    `check` or without: they are llm.c files, and what they are is the useful answer."""
    header = _read_header(path)
    if header is not None and header[0] == LLMC_MAGIC and int(header[1]) in LLMC_DTYPES:
        return header
    if header is not None and (header[0] == LLMC_MAGIC or int(header[0]) in LLMC_OTHER_FILES) or check:
        raise Gpt2TrainError(f"{path}: not a GPT-2 llm.c model file: {_llmc_header_found(path)}; expected magic "
                             f"{LLMC_MAGIC} with version 3 (fp32) or 5 (bf16), as llm.c's train_gpt2.py "
                             f"write_model and train_gpt2cu's checkpoints (model_*.bin) write")
    return None


def _llmc_header_found(path: Path) -> str:
    """What the start of `path` holds, against an llm.c model file's header (for one-line errors)."""
    header = _read_header(path)
    if header is None:
        return f"it is {path.stat().st_size} bytes, shorter than llm.c's {LLMC_HEADER_INTS * 4}-byte header"
    magic, version = int(header[0]), int(header[1])
    what = (f", that of {LLMC_OTHER_FILES[magic]}" if magic in LLMC_OTHER_FILES
            else ", that of a GPT-2 model file of a version gpt2train does not read" if magic == LLMC_MAGIC else "")
    return f"its header holds magic {magic}, version {version}{what}"


def _llmc_shape(header: np.ndarray, path: Path | None = None) -> GPTConfig:
    """The model an llm.c header describes: maxT, V, L, NH, C, Vp (train_gpt2.cu's gpt2_build_from_checkpoint)."""
    maxT, V, L, NH, C, Vp = (int(x) for x in header[2:8])
    if min(maxT, V, L, NH, C, Vp) < 1 or C % NH or Vp < V:
        raise Gpt2TrainError(f"{path or 'llm.c model file'}: its header's shape is not a GPT-2 (maxT={maxT}, V={V}, "
                             f"L={L}, NH={NH}, C={C}, Vp={Vp}: each must be >= 1, C a multiple of NH, Vp >= V); "
                             f"a damaged or foreign file")
    return GPTConfig(n_layer=L, n_head=NH, n_embd=C, block_size=maxT, vocab_size=V, padded_vocab_size=Vp)


def _load_llmc(path: Path) -> GPT:
    from gpt2train.model import GPT

    model = GPT(_llmc_shape(_llmc_header(path), path))
    model.load_state_dict(_llmc_state_dict(path))
    return model


def _llmc_layout(path: Path, header: np.ndarray) -> tuple[GPTConfig, type, list[tuple[str, tuple[int, ...]]]]:
    """(the shape, the stored dtype, each parameter's name and shape in file order) of an llm.c model file,
    after checking that the file holds exactly the parameters its header announces: a truncated file, or a
    damaged header that would build a model of another size, is found from the file's size alone."""
    cfg = _llmc_shape(header, path)
    dtype = LLMC_DTYPES[int(header[1])]
    shapes = [(name.format(layer), shape(cfg.padded_vocab_size, cfg.block_size, cfg.n_embd))
              for name, shape in LLMC_PARAMETERS
              for layer in (range(cfg.n_layer) if "{}" in name else [None])]
    count = sum(int(np.prod(s)) for _, s in shapes)
    stored = (path.stat().st_size - LLMC_HEADER_INTS * 4) / np.dtype(dtype).itemsize
    if stored != count:
        raise Gpt2TrainError(f"{path}: {stored:,.0f} parameters after the header, but its header (L={cfg.n_layer}, "
                             f"C={cfg.n_embd}, maxT={cfg.block_size}, Vp={cfg.padded_vocab_size}) needs {count:,}: "
                             f"a truncated or foreign file")
    return cfg, dtype, shapes


def _llmc_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The parameters of an llm.c model file under our names (lm_head tied to wte)."""
    import torch

    header = _llmc_header(path)
    cfg, dtype, shapes = _llmc_layout(path, header)
    data = np.fromfile(path, dtype=dtype, offset=LLMC_HEADER_INTS * 4)
    flat = torch.from_numpy(data.astype(np.int32) << 16).view(torch.float32) if dtype is np.uint16 \
        else torch.from_numpy(data)
    state, offset = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        state[name] = flat[offset:offset + n].view(shape)
        offset += n
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: llm.c stores it once
    return state
