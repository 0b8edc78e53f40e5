"""llm.c's command line: its `train_gpt2cu` flags as config overrides, and its launch lines as presets.

    rest, overrides = llmc_args_to_overrides(["-b", "64", "-t", "1024", "--config", "gpt2_124m"])
    launch = parse_launch_command('mpirun -np 8 ./train_gpt2cu -v 250 -b 64 ... -e "d12"')
    preset_differences("configs/gpt2_124m.yaml")   # [] when the preset is its header's llm.c run

`python -m gpt2train.train` accepts llm.c's flags as they are in `scripts/run_gpt2_*.sh`. Each
`configs/gpt2_*.yaml` quotes the llm.c launch line it reproduces in its header; `preset_differences`
resolves that line the way llm.c would (its own defaults for every flag the line leaves out) and
names each setting where the preset's body says otherwise (tests/test_presets.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from gpt2train.config import load_config

# llm.c's train_gpt2cu flags -> our config keys, so `scripts/run_gpt2_124M.sh`'s arguments work as
# they are. Each takes one value, as in llm.c. (`-ge`, llm.c's GELU-fusion switch, is accepted and
# ignored: the kernels are chosen by --kernels / train.kernels.)
LLMC_FLAGS = {
    "-i": "train.train_glob", "-j": "train.val_glob", "-o": "train.out_dir", "-e": "model.descriptor",
    "-b": "train.batch_size", "-t": "train.seq_len", "-d": "train.total_batch_tokens", "-x": "train.max_steps",
    "-k": "train.lr_schedule", "-l": "train.learning_rate", "-q": "train.final_lr_frac", "-u": "train.warmup_steps",
    "-c": "train.weight_decay", "-z": "train.zero_stage", "-r": "train.recompute", "-w": "train.master_weights",
    "-n": "train.checkpoint_every", "-nk": "train.keep_last", "-nm": "train.major_every", "-y": "train.resume",
    "-v": "train.val_every", "-m": "train.val_batches", "-s": "train.sample_every", "-g": "train.sample_tokens",
    "-h": "train.hellaswag_every", "-sl": "train.skip_loss_z", "-sg": "train.skip_grad_z",
    "-a": "train.overfit_batch", "-f": "train.tf32", "-ge": None,
}
# llm.c's on/off flags take 0/1; ours are booleans. `-h 1` means "every val_every steps".
_LLMC_BOOL = {"train.master_weights", "train.resume", "train.overfit_batch", "train.tf32"}

# What train_gpt2cu uses for a flag its command line leaves out (train_gpt2.cu, main()). -d is absent:
# its default (-1) means B x T x processes, no accumulation; -e has no usable default (a weights
# file). -i, -j and -o are paths, which the pipeline chooses (shards/ and runs/<run tag> under
# data_dir).
# llm.c's -r 1 recomputes the GELU; ours recomputes the whole MLP (gpt2train/training/parallelize.py): the
# same memory trade, a coarser cut, so a preset compares -r values as numbers only.
LLMC_DEFAULTS = {
    "-b": "4", "-t": "1024", "-x": "-1", "-k": "cosine", "-l": "3e-4", "-u": "0", "-q": "1.0", "-c": "0.0",
    "-sl": "0", "-sg": "0", "-v": "20", "-m": "20", "-s": "20", "-g": "64", "-h": "0", "-a": "0", "-f": "1",
    "-w": "1", "-z": "0", "-r": "1", "-n": "0", "-nk": "0", "-nm": "0", "-y": "0",
}
PATH_FLAGS = ("-i", "-j", "-o")


def llmc_args_to_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split llm.c-style `-x VALUE` pairs out of argv: (remaining argv, `--set` overrides).
    `-e` with a path (an llm.c model file, one of our checkpoints, a Hugging Face GPT-2 directory) or a
    Hub id `hf:<owner>/<name>` initialises from it and takes its shape, as llm.c's `-e model.bin` builds
    the model from the file's header (model.descriptor `custom`: gpt2train/config_checks.py); otherwise
    it is a descriptor (`-e d12`). Numbers pass as llm.c's users type them: `-l 6e-4` and `-l 0.0006`
    are the same float (gpt2train/config.py `_check`); an int flag takes digits only (`-x 1e5` is
    refused, where llm.c's atoi would read 1)."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        flag = argv[i]
        if flag in LLMC_FLAGS and i + 1 < len(argv):
            key, value = LLMC_FLAGS[flag], argv[i + 1]
            i += 2
            if key is None:
                continue  # -ge
            if key == "model.descriptor" and (Path(value).exists() or value.startswith("hf:")):
                overrides += [f"train.init_from={value}", "model.descriptor=custom"]  # llm.c's -e gpt2_124M.bin
                continue
            if key in _LLMC_BOOL:
                value = "true" if value not in ("0", "false") else "false"
            if key == "train.hellaswag_every":
                overrides.append(f"train.hellaswag_every={'0' if value == '0' else '-1'}")
                continue
            overrides.append(f"{key}={value}")
        else:
            rest.append(flag)
            i += 1
    return rest, overrides


@dataclass
class LlmcLaunch:
    """An llm.c launch command: processes (`mpirun -np N`, 1 without mpirun) and its flags."""

    processes: int
    flags: dict[str, str]

    def settings(self) -> dict[str, str]:
        """{config key: value} of everything the launch decides: its flags, llm.c's default for each
        flag it leaves out, the processes per node; paths excluded (see LLMC_DEFAULTS)."""
        flags = {**LLMC_DEFAULTS, **{f: v for f, v in self.flags.items() if f not in PATH_FLAGS}}
        if "-d" not in flags:
            flags["-d"] = str(int(flags["-b"]) * int(flags["-t"]) * self.processes)
        argv = [token for pair in flags.items() for token in pair]
        rest, overrides = llmc_args_to_overrides(argv)
        if rest:
            raise ValueError(f"not llm.c flags: {' '.join(rest)}")
        settings = dict(item.split("=", 1) for item in overrides)
        settings["launch.nproc_per_node"] = str(self.processes)
        return settings


def parse_launch_command(command: str) -> LlmcLaunch:
    """`mpirun -np 8 ./train_gpt2cu -v 250 ...` (or without mpirun) -> LlmcLaunch."""
    tokens = shlex.split(command)
    binary = next((i for i, tok in enumerate(tokens) if Path(tok).name == "train_gpt2cu"), None)
    if binary is None:
        raise ValueError(f"no train_gpt2cu in {command!r}")
    launcher = tokens[:binary]
    processes = int(launcher[launcher.index("-np") + 1]) if "-np" in launcher else 1
    args = tokens[binary + 1:]
    if len(args) % 2:
        raise ValueError(f"llm.c flags come in `-flag value` pairs; odd count in {' '.join(args)!r}")
    flags = dict(zip(args[::2], args[1::2]))
    unknown = sorted(set(flags) - set(LLMC_FLAGS))
    if unknown:
        raise ValueError(f"unknown llm.c flag(s) {', '.join(unknown)}")
    return LlmcLaunch(processes, flags)


def header_launch_command(preset: str | Path) -> str | None:
    """The llm.c command a preset's header quotes after `llm.c:`, with `\\` continuation lines joined."""
    lines = Path(preset).read_text().splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"#\s+llm\.c:\s+(.*)", line):  # the header's `llm.c:` label opens a line
            command = m.group(1).strip()
            while command.endswith("\\") and i + 1 < len(lines) and lines[i + 1].startswith("#"):
                i += 1
                command = command[:-1].rstrip() + " " + lines[i].lstrip("#").strip()
            return command
    return None


def preset_differences(preset: str | Path) -> list[str]:
    """Each setting of the preset that differs from the llm.c run its header quotes, as
    `key: preset X, llm.c Y`; [] when they agree (or the header quotes no llm.c run)."""
    command = header_launch_command(preset)
    if command is None:
        return []
    settings = parse_launch_command(command).settings()
    ours = load_config(preset)
    # The llm.c run = the preset with every llm.c setting applied over it: the same typed parsing
    # (`--set`), so "0.0006" and "6e-4" or "1" and "true" compare as the values they are.
    theirs = load_config(preset, [f"{k}={v}" for k, v in settings.items()])
    out = []
    for key in settings:
        section, name = key.split(".")
        a, b = getattr(getattr(ours, section), name), getattr(getattr(theirs, section), name)
        if a != b:
            out.append(f"{key}: preset {a!r}, llm.c {b!r}")
    return out
