"""The bench commands the README shows and the lent-GPU check runs (.ci/gpu/*.sh) parse and pass the
bench's argument checks: a flag renamed or a preset dropped fails here, on a CPU, rather than in a
lent GPU's 15 minutes or in a reader's first try. Nothing is run: each stage's `run` is replaced."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from diffscale import hardware
from diffscale.bench import STAGES
from diffscale.bench import __main__ as bench_main

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / ".ci" / "gpu").glob("*.sh"))]


def _code(path: Path) -> str:
    """The shell a file runs or shows: a script whole, a Markdown file's fenced blocks."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        lines, fence = [], None
        for line in text.splitlines():
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
            elif fence in ("", "bash", "sh", "console"):
                lines.append(line)
        text = "\n".join(lines)
    return text.replace("\\\n", " ")


def bench_commands(path: Path) -> list[list[str]]:
    """Each `python -m diffscale.bench …` in `path` as its argument list: up to a redirection, pipe or
    comment; a usage sketch's [optional] brackets dropped; $OUT as a placeholder folder."""
    found = []
    for line in _code(path).splitlines():
        match = re.search(r"python3? -m diffscale\.bench\b(.*)", line)
        if match:
            words = re.split(r"\s(?:#|\||2>&1|>)", match.group(1))[0].replace("[", " ").replace("]", " ")
            found.append(shlex.split(words.replace("$OUT", "/tmp/documented-out")))
    return found


COMMANDS = [(source, i, argv) for source in SOURCES for i, argv in enumerate(bench_commands(ROOT / source))]


def test_the_documented_bench_commands_are_found():
    """The README shows the embed, gil, cores, train, flux and ddpm benches; the GPU check runs four."""
    stages = {argv[argv.index(next(a for a in argv if a in STAGES))] for _, _, argv in COMMANDS}
    assert {"embed", "gil", "cores", "train", "flux", "ddpm"} <= stages
    assert len([c for c in COMMANDS if c[0] == ".ci/gpu/embed-check.sh"]) == 4


@pytest.mark.parametrize("source, index, argv", COMMANDS, ids=[f"{s}#{i}" for s, i, _ in COMMANDS])
def test_a_documented_bench_command_parses_and_passes_its_checks(source, index, argv, monkeypatch):
    ran = []
    for module_name in STAGES.values():
        module = __import__(module_name, fromlist=["run"])
        monkeypatch.setattr(module, "run", lambda args: ran.append(args.stage) or [])
    monkeypatch.setattr(bench_main, "write_results", lambda *a, **k: (Path("x.csv"), Path("x.json")))
    monkeypatch.setattr(hardware, "cuda_problem", lambda: None)  # a GPU command is checked as on a GPU host
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert bench_main.main(argv) == 0, (source, argv)
    assert len(ran) == 1
