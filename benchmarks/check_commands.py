"""Checks the arguments of benchmark commands, all in one process (`CHECK=1 benchmarks/gpu.sh`).

Run:
  python benchmarks/check_commands.py COMMANDS_FILE

COMMANDS_FILE holds one shell-quoted command per line (`printf '%q '`), as gpu.sh records
them in CHECK mode, e.g. `python benchmarks/encoder.py --model tiny --remat full ...`. Each
line is parsed by its script's own `parse_args` (the parser the benchmark runs, device and
torch checks included) and printed as `arguments ok: ...`. Parsing all of them in one
process costs one import of JAX and PyTorch instead of one per command (a minute of the
test suite on 2 cores). Exit status 1 when any command is refused (its parser's message is
printed) or names a script this checker does not know.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other as plain modules
# The scripts gpu.sh runs, each with a `parse_args(argv)`.
KNOWN_SCRIPTS = ("encoder", "memory", "contrastive_logits")


def parse_with_script(script: str, argv: list[str]) -> None:
    """Parses `argv` with the parse_args of `script` (raises SystemExit when refused)."""
    name = Path(script).stem
    if Path(script).parent.name != "benchmarks" or name not in KNOWN_SCRIPTS:
        raise SystemExit(f"{script}: not a benchmark script this checker knows")
    module = __import__(name)
    module.parse_args(argv)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/check_commands.py COMMANDS_FILE", file=sys.stderr)
        return 2
    if not Path(argv[0]).is_file():
        print(
            f"error: {argv[0]}: no such file (CHECK=1 benchmarks/gpu.sh OUT writes "
            "OUT/commands.txt)",
            file=sys.stderr,
        )
        return 2
    lines = [line for line in Path(argv[0]).read_text().splitlines() if line.strip()]
    refused = 0
    for line in lines:
        words = shlex.split(line)
        if len(words) < 2 or Path(words[0]).name not in ("python", "python3"):
            print(f"refused (not `python SCRIPT ...`): {line}", file=sys.stderr)
            refused += 1
            continue
        try:
            parse_with_script(words[1], words[2:])
        except SystemExit as refusal:  # argparse's error() exits 2 after printing why
            if isinstance(refusal.code, str):
                print(refusal.code, file=sys.stderr)
            print(f"refused: {line}", file=sys.stderr)
            refused += 1
            continue
        print("arguments ok:", " ".join(words[2:]))
    if not lines:
        print(f"{argv[0]}: no commands", file=sys.stderr)
        return 1
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
