"""Compile every Triton kernel for a GPU exactly as training would launch it, with or without one.

    builds = compile_launches(arch=90, shape=SHAPES["124M"], mode=MODES["bf16-autocast"])
    problems = find_problems(builds)              # [] when every kernel is fit to run

`python bench/aot_compile.py` runs this for sm_80 (A100) and sm_90 (H100 / H200) at GPT-2 124M
and 1558M shapes in every precision the trainer uses, on a machine with no GPU: a stand-in
triton driver reports the target and nothing is ever launched (`gpt2train.kernels.compile_only`).
The trainer calls `check_kernels_compile` on its own GPU before the first step, so a kernel that
does not build there stops the run with one line naming the kernel and the architecture.

The CPU interpreter, which the kernel tests run, enforces none of `@triton.jit`'s rules (a
module-level float read inside a kernel runs there and is a NameError on a GPU), nor register
or shared-memory limits: only a real compilation finds those.

Each host launcher is called once per distinct launch a training step makes: the first block's
LayerNorm (no pending residual) and the others, the backward with and without r's own gradient,
bias+GELU, attention with q/k/v as strided views of the c_attn output and dO as the transposed
view autograd passes, the classifier's row kernel with gradients (training) and without
(validation). Tensors are CPU tensors of the real shapes: triton specializes on dtypes, on
integers equal to 1 or divisible by 16 and on pointer alignment, which is all a CPU tensor
needs to provide; their contents are never read.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import torch

from gpt2train.kernels import Build, compile_only

# Shared memory one block may use (the opt-in maximum), bytes: the CUDA C Programming Guide's table
# of compute capabilities ("Maximum amount of shared memory per thread block": 163 KB on 8.0,
# 227 KB on 9.0). Registers: 64 K 32-bit registers per block on both.
MAX_SHARED_BYTES = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448}
MAX_REGISTERS_PER_BLOCK = 65_536
ARCH_NAMES = {80: "sm_80 (A100)", 86: "sm_86", 89: "sm_89 (L4, L40S)", 90: "sm_90 (H100, H200)"}


@dataclass(frozen=True)
class ModelShape:
    """The sizes a training step launches the kernels with."""

    name: str
    C: int                 # channels
    H: int                 # heads (head dim C / H)
    B: int                 # micro-batch
    T: int = 1024          # sequence length
    V: int = 50257         # vocabulary
    VP: int = 50304        # padded vocabulary (the lm_head's rows)

    @property
    def D(self) -> int:
        return self.C // self.H


# llm.c's two ends of the GPT-2 range, at the micro-batches of its launch scripts (-b 64 / -b 16).
SHAPES = {"124M": ModelShape("124M", C=768, H=12, B=64), "1558M": ModelShape("1558M", C=1600, H=25, B=16)}


@dataclass(frozen=True)
class PrecisionMode:
    """The dtypes each kernel sees in one of the trainer's precision settings."""

    name: str
    stream: torch.dtype    # the residual stream and every LayerNorm's output (fp32 under autocast)
    matmul: torch.dtype    # what a Linear returns: the pending residual, the c_fc output, q/k/v, logits
    params: torch.dtype    # LayerNorm weights, biases
    tf32: bool             # torch.backends.cuda.matmul.allow_tf32 (train.tf32)
    settings: str          # the config that selects it


MODES = {m.name: m for m in [
    PrecisionMode("bf16-autocast", torch.float32, torch.bfloat16, torch.float32, True,
                  "train.bf16=true (default): bf16 autocast over fp32 master weights"),
    PrecisionMode("bf16-pure", torch.bfloat16, torch.bfloat16, torch.bfloat16, True,
                  "train.master_weights=false (llm.c -w 0): the weights themselves in bf16"),
    PrecisionMode("fp32-tf32", torch.float32, torch.float32, torch.float32, True,
                  "train.bf16=false, train.tf32=true"),
    PrecisionMode("fp32-ieee", torch.float32, torch.float32, torch.float32, False,
                  "train.bf16=false, train.tf32=false (llm.c -f 0)"),
]}


def mode_for(bf16: bool, master_weights: bool, tf32: bool) -> PrecisionMode:
    """The precision mode of a train config (train.bf16, train.master_weights, train.tf32)."""
    if bf16:
        return MODES["bf16-autocast" if master_weights else "bf16-pure"]
    return MODES["fp32-tf32" if tf32 else "fp32-ieee"]


@dataclass
class KernelBuild:
    """One compiled (or failed) kernel with what ptxas and triton report about it."""

    kernel: str
    launch: str            # which launch of the step it serves, e.g. "attention backward"
    arch: int
    shape: str
    mode: str
    config: str            # the autotune config, or "-" for a kernel launched with fixed meta-parameters
    spills_ok: str | None  # the reason a spilling config stays in its autotune list, if one is given
    num_warps: int = 0
    registers: int | None = None
    spill_bytes: int | None = None   # ptxas's spill stores, bytes per thread
    shared_bytes: int | None = None  # shared memory per block (triton allocates it dynamically)
    error: str | None = None

    @property
    def fits(self) -> bool:
        return not (self.error or self.spill_bytes or self.over_shared or self.over_registers)

    @property
    def over_shared(self) -> bool:
        limit = MAX_SHARED_BYTES.get(self.arch)
        return bool(limit and self.shared_bytes and self.shared_bytes > limit)

    @property
    def over_registers(self) -> bool:
        return bool(self.registers and self.registers * self.num_warps * 32 > MAX_REGISTERS_PER_BLOCK)


@dataclass
class Problem:
    kind: str              # compile | spills | shared | registers | no-fit
    text: str
    builds: list[KernelBuild] = field(default_factory=list)

    @property
    def blocks_training(self) -> bool:
        """A launch none of whose configs can run: none compiles, or none fits. (A spilling config still
        runs, slower; the autotuner skips one that fails to build or to launch when another fits.)"""
        return self.kind == "no-fit"


# --------------------------------------------------------------------------- the stand-in driver

class _TargetOnlyDriver:
    """What triton's JIT asks of a driver before it launches anything: the target and a device id.
    The device id is the arch, so that kernels compiled for two targets in one process keep apart
    caches (triton keys its per-device caches, and the target they were built for, by it)."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.arch = arch
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return self.arch

    def get_current_stream(self, device) -> int:
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


@contextlib.contextmanager
def target_driver(arch: int) -> Iterator[None]:
    """Make triton compile for `arch` (e.g. 90) on a machine with no GPU or another one."""
    from triton.runtime.driver import driver

    previous = driver._active  # triton's own DriverConfig has no public getter for "no override"
    driver.set_active(_TargetOnlyDriver(arch))
    try:
        yield
    finally:
        driver._active = previous


# --------------------------------------------------------------------------- the launches

def _launches(shape: ModelShape, mode: PrecisionMode) -> list[tuple[str, Callable[[], object]]]:
    """(name, call) for every distinct kernel launch of a training step and a validation pass."""
    from gpt2train.kernels.attention import attention_backward, attention_forward
    from gpt2train.kernels.classifier import cross_entropy_rows_triton, default_chunk_rows
    from gpt2train.kernels.gelu import bias_gelu_backward, bias_gelu_forward
    from gpt2train.kernels.layernorm import residual_layernorm_backward, residual_layernorm_forward

    B, T, C, H, D = shape.B, shape.T, shape.C, shape.H, shape.D
    N = B * T
    s, m, p = mode.stream, mode.matmul, mode.params

    def empty(*size, dtype):
        return torch.empty(*size, dtype=dtype)

    w, b = empty(C, dtype=p), empty(C, dtype=p)
    mean, rstd = empty(N, dtype=torch.float32), empty(N, dtype=torch.float32)

    def attention_inputs():
        qkv = empty(B, T, 3 * C, dtype=m)  # CausalSelfAttention: c_attn(x).split(C, dim=2), (B, nh, T, hs) views
        return [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=2)]

    def attention_backward_call():
        q, k, v = attention_inputs()
        o = empty(B, T, H, D, dtype=m).transpose(1, 2)    # attention_forward's output layout
        do = empty(B, T, H, D, dtype=m).transpose(1, 2)   # the gradient of y.transpose(1, 2).contiguous()
        attention_backward(q, k, v, o, empty(B * H, T, dtype=torch.float32), do)

    rows = default_chunk_rows(N, C, shape.VP)
    targets = torch.zeros(rows, dtype=torch.int64)
    return [
        ("layernorm forward, first block", lambda: residual_layernorm_forward(empty(N, C, dtype=s), None, w, b, 1e-5)),
        ("layernorm forward, residual", lambda: residual_layernorm_forward(empty(N, C, dtype=s), empty(N, C, dtype=m),
                                                                           w, b, 1e-5)),
        ("layernorm backward, first block", lambda: residual_layernorm_backward(
            empty(N, C, dtype=s), empty(N, C, dtype=s), None, w, mean, rstd)),
        ("layernorm backward, residual", lambda: residual_layernorm_backward(
            empty(N, C, dtype=s), empty(N, C, dtype=s), empty(N, C, dtype=s), w, mean, rstd)),
        ("bias+gelu forward", lambda: bias_gelu_forward(empty(N, 4 * C, dtype=m), empty(4 * C, dtype=p))),
        ("bias+gelu backward", lambda: bias_gelu_backward(empty(N, 4 * C, dtype=m), empty(4 * C, dtype=p),
                                                          empty(N, 4 * C, dtype=m))),
        ("attention forward", lambda: attention_forward(*attention_inputs())),
        ("attention backward", attention_backward_call),
        ("classifier, training", lambda: cross_entropy_rows_triton(empty(rows, shape.VP, dtype=m), targets, shape.V,
                                                                    empty(rows, dtype=torch.float32))),
        ("classifier, validation", lambda: cross_entropy_rows_triton(empty(rows, shape.VP, dtype=m), targets, shape.V,
                                                                      empty(rows, dtype=torch.float32),
                                                                      write_grad=False)),
    ]


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


# ptxas -v, as triton prints it with knobs.nvidia.dump_ptxas_log: one block per compiled entry.
_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas_log(text: str) -> list[tuple[str, int, int]]:
    """[(entry name, registers, spill-store bytes)] in the order ptxas compiled them."""
    out = []
    for block in re.split(r"(?=ptxas[\w-]* info\s*: Compiling entry function)", text):
        entry = _PTXAS_ENTRY.search(block)
        regs = _PTXAS_REGISTERS.search(block)
        if entry and regs:
            spills = _PTXAS_SPILLS.search(block)
            out.append((entry.group(1), int(regs.group(1)), int(spills.group(1)) if spills else 0))
    return out


def _config_text(config) -> str:
    if config is None:
        return "-"
    blocks = "x".join(str(v) for v in config.kwargs.values())
    return f"{blocks} w{config.num_warps} s{config.num_stages}"


def compile_launches(arch: int, shape: ModelShape, mode: PrecisionMode, *, stand_in: bool = True,
                     stats: dict | None = None, launches: Collection[str] | None = None,
                     ptxas_stats: bool = True) -> list[KernelBuild]:
    """Compile every launch of a step at `shape` in `mode` for `arch`; nothing runs.

    stand_in: compile through the target-only driver (no GPU needed); False uses the active driver
    (the trainer's preflight on its own GPU, where `arch` is the device's). `stats` caches ptxas
    figures by kernel hash across calls: triton reuses an identical build without compiling it
    again, and prints no ptxas log for it. `launches`: only these (names as in `_launches`).
    ptxas_stats=False: compile only, without registers and spills (the trainer's preflight, which
    may run on an older triton than bench/aot_compile.py's; registers are then None)."""
    stats = {} if stats is None else stats
    results: list[KernelBuild] = []
    driver_cm = target_driver(arch) if stand_in else contextlib.nullcontext()
    with driver_cm, _tf32(mode.tf32):
        for launch_name, call in _launches(shape, mode):
            if launches is not None and launch_name not in launches:
                continue
            log = io.StringIO()
            ptxas_log = _ptxas_log() if ptxas_stats else contextlib.nullcontext()
            with compile_only() as builds, ptxas_log, contextlib.redirect_stdout(log):
                call()
            _record_ptxas_stats(builds, parse_ptxas_log(log.getvalue()), stats)
            results += [_describe(build, launch_name, arch, shape, mode, stats) for build in builds]
    return results


def _record_ptxas_stats(builds: list[Build], entries: list[tuple[str, int, int]], stats: dict) -> None:
    """Give each build compiled just now its ptxas figures: ptxas logged one entry per build it
    compiled, in order. A build triton found in its disk cache logged none, so when the entries do not
    line up one to one (by count and kernel name) every new build's figures stay unknown rather than
    be given another build's."""
    new, seen = [], set(stats)
    for b in builds:  # the first build of each new hash: a repeat was served from triton's memory
        if b.compiled is not None and b.compiled.hash not in seen:
            seen.add(b.compiled.hash)
            new.append(b)
    aligned = len(entries) == len(new) and all(e[0] == b.name for e, b in zip(entries, new))
    for i, b in enumerate(new):
        stats[b.compiled.hash] = entries[i][1:] if aligned else (None, None)


@contextlib.contextmanager
def _ptxas_log() -> Iterator[None]:
    from triton import knobs

    before = knobs.nvidia.dump_ptxas_log
    knobs.nvidia.dump_ptxas_log = True
    try:
        yield
    finally:
        knobs.nvidia.dump_ptxas_log = before


def _describe(build: Build, launch_name: str, arch: int, shape: ModelShape, mode: PrecisionMode,
              stats: dict) -> KernelBuild:
    kb = KernelBuild(kernel=build.name, launch=launch_name, arch=arch, shape=shape.name, mode=mode.name,
                     config=_config_text(build.config), spills_ok=getattr(build.config, "spills_ok", None))
    if build.error is not None:
        kb.error = _error_text(build.error)
        return kb
    md = build.compiled.metadata
    kb.num_warps, kb.shared_bytes = md.num_warps, md.shared
    kb.registers, kb.spill_bytes = stats.get(build.compiled.hash, (None, None))
    return kb


def _error_text(e: BaseException) -> str:
    """One line: what went wrong, and in which @triton.jit function. Triton chains a CompilationError
    per call level (`raise ... from`); the innermost holds the source of the failing function
    ("at 2:11:", its lines, a caret) and, last, the error itself."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("at "):
        fn = next((m.group(1) for ln in lines if (m := re.match(r"def (\w+)\(", ln))), None)
        what = lines[-1]
        if m := re.fullmatch(r"""(\w+)\((['"])(.*)\2\)""", what):  # NameError("Cannot access ... Triton kernels ...")
            what = f"{m.group(1)}: {m.group(3).split('. ')[0]}"
        return what + (f" (in {fn})" if fn else "")
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def find_problems(builds: list[KernelBuild]) -> list[Problem]:
    """What keeps a kernel from running well: compile errors, a launch with no config that fits,
    and spilling configs whose autotune entry gives no reason to keep them."""
    problems = []
    for b in builds:
        where = f"{b.kernel} [{b.config}] for {ARCH_NAMES.get(b.arch, f'sm_{b.arch}')}, {b.shape} {b.mode}"
        if b.error:
            problems.append(Problem("compile", f"{where}: does not compile: {b.error}", [b]))
        elif b.spill_bytes and not b.spills_ok:
            problems.append(Problem("spills", f"{where}: spills {b.spill_bytes} bytes per thread; prune the tile or "
                                              f"give its entry a reason to stay", [b]))
        elif b.over_shared:
            problems.append(Problem("shared", f"{where}: needs {b.shared_bytes:,} B of shared memory, over the "
                                              f"{MAX_SHARED_BYTES[b.arch]:,} B limit; prune the tile", [b]))
        elif b.over_registers:
            problems.append(Problem("registers", f"{where}: {b.registers} registers x {b.num_warps * 32} threads "
                                                 f"exceed a block's {MAX_REGISTERS_PER_BLOCK:,}", [b]))
    groups: dict[tuple, list[KernelBuild]] = {}
    for b in builds:
        groups.setdefault((b.kernel, b.launch, b.arch, b.shape, b.mode), []).append(b)
    for (kernel, launch_name, arch, shape, mode), group in groups.items():
        if not any(b.fits or (b.spills_ok and not (b.error or b.over_shared or b.over_registers)) for b in group):
            arch_name = ARCH_NAMES.get(arch, f"sm_{arch}")
            error = next((b.error for b in group if b.error), None)
            text = (f"{kernel} ({launch_name}) does not compile for {arch_name} at {shape} {mode}: {error}" if error
                    else f"{kernel} ({launch_name}) has no config that fits {arch_name} at {shape} {mode}")
            problems.append(Problem("no-fit", text, group))
    return problems


def check_kernels_compile(shape: ModelShape, mode: PrecisionMode, choice: str = "triton", arch: int | None = None,
                          stand_in: bool = False, launches: Collection[str] | None = None) -> int:
    """The trainer's preflight with `train.kernels=triton` on a GPU: compile every kernel at the run's
    shapes and precision for this GPU (cached by triton, so the run's own launches reuse them) and
    raise KernelCompileError, naming the kernel and the architecture, if one cannot run (`choice`: the
    configured train.kernels, for the message). Returns the arch checked. `arch` / `stand_in` let a machine without that GPU run the same check; `launches`
    narrows it (see compile_launches)."""
    from gpt2train.errors import KernelCompileError

    if arch is None:
        major, minor = torch.cuda.get_device_capability()
        arch = 10 * major + minor
    builds = compile_launches(arch, shape, mode, stand_in=stand_in, launches=launches, ptxas_stats=False)
    for problem in find_problems(builds):
        if problem.blocks_training:
            raise KernelCompileError(f"Triton kernels (train.kernels={choice}): {problem.text}. Train with "
                                     f"--kernels torch (train.kernels=torch) on this GPU; `python "
                                     f"bench/aot_compile.py --arch {arch}` shows every kernel's build")
    return arch


@contextlib.contextmanager
def fresh_triton_cache() -> Iterator[str]:
    """Compile into an empty cache, so that every build runs ptxas and reports its registers."""
    before = os.environ.get("TRITON_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="gpt2train-aot-") as tmp:
        os.environ["TRITON_CACHE_DIR"] = tmp
        try:
            yield tmp
        finally:
            if before is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = before
