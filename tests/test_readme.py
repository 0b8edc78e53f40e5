"""The README's CLI examples, run as written, offline, in a fresh copy of the checkout.

The copy (every file git would commit, beside a `shared` link to ../shared) makes the commands'
relative paths — `data/...`, the presets' `data` and `../shared/...`, which are the working
directory's — land in a temporary folder, as they would in a new clone, and never in this checkout's own data/. `gpt2train` is this
environment's console script pointed at the copy (PYTHONPATH).

Lines marked "online only" need the Hugging Face Hub and are skipped (their download code is tested
against a local Hub server in tests/test_hub.py). `<run>` is the run directory the pipeline made;
`./gpt2` ("any HF GPT-2, e.g. OpenAI's", downloaded online) is stood in for by one of our exports.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.paths import REPO, SHARED

pytestmark = pytest.mark.e2e


def cli_block() -> list[str]:
    """The command lines of the README's `### CLI` code block, without their comments."""
    text = (REPO / "README.md").read_text()
    section = text.split("### CLI", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def copy_checkout(dest):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_every_cli_example_of_the_readme_runs(tmp_path):
    lines = cli_block()
    online = [line for line in lines if "online only" in line]
    runnable = [line for line in lines if line not in online]
    assert runnable and all(line.startswith(("export ", "gpt2train ", "torchrun ")) for line in runnable), runnable
    checkout = tmp_path / "checkout"
    copy_checkout(checkout)
    (tmp_path / "shared").symlink_to(SHARED)
    script = ["set -euo pipefail",
              f'gpt2train() {{ "{sys.executable}" -m pipelines.cli "$@"; }}',
              # torchrun as installed beside this Python (the README's line runs `torchrun` from the venv)
              f'torchrun() {{ "{sys.executable}" -m torch.distributed.run "$@"; }}']
    for line in runnable:
        if "<run>" in line:
            script.append('RUN=$(basename "$(ls -d data/runs/*/ | head -1)")')
            line = line.replace("<run>", "$RUN")
        if " ./gpt2 " in f"{line} ":
            script.append('[ -d gpt2 ] || cp -r "data/exports/$RUN@step_00000040" gpt2')
        script += [f"echo {shlex.quote('+ ' + line)} >&2", line]
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "TIKTOKEN_CACHE_DIR")}
    env["PYTHONPATH"] = str(checkout)
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{done.stdout[-2000:]}"
    ran = [line for line in done.stderr.splitlines() if line.startswith("+ ")]
    assert len(ran) == len(runnable), ran
    # What the examples say they make, made in the copy.
    assert (checkout / "data" / "my_export" / "model.safetensors").is_file()
    assert (checkout / "reports" / "gpt2").is_dir()
    print(f"\nREADME CLI examples: {len(runnable)} ran, {len(online)} skipped as online only")
