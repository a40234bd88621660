"""The commands the docs show still parse: the bench commands of the README and of the lent-GPU check
(.ci/gpu/*.sh), with the bench's argument checks, and the script commands of the README and of each
script's --help. A flag renamed or a preset dropped fails here, on a CPU, rather than in a lent GPU's
15 minutes or in a reader's first try. Nothing runs: a bench stage's `run` is replaced, and a script
stops right after parsing its arguments."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import torch

from diffscale import hardware, timing
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
    stages = {next(word for word in argv if word in STAGES) for _, _, argv in COMMANDS}
    assert {"embed", "gil", "cores", "train", "flux", "ddpm"} <= stages
    assert len([c for c in COMMANDS if c[0] == ".ci/gpu/embed-check.sh"]) == 4


@pytest.mark.parametrize("source, index, argv", COMMANDS, ids=[f"{s}#{i}" for s, i, _ in COMMANDS])
def test_a_documented_bench_command_parses_and_passes_its_checks(source, index, argv, monkeypatch):
    ran = []
    for module_name in STAGES.values():
        monkeypatch.setattr(importlib.import_module(module_name), "run", lambda args: ran.append(args.stage) or [])
    monkeypatch.setattr(bench_main, "write_results", lambda *a, **k: (Path("x.csv"), Path("x.json")))
    monkeypatch.setattr(hardware, "cuda_problem", lambda: None)  # a GPU command is checked as on a GPU host
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert bench_main.main(argv) == 0, (source, argv)
    assert len(ran) == 1


# --- the scripts' commands: the README's and each script's own docstring ----------------------------

def _docstring_code(path: Path) -> str:
    return (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").replace("\\\n", " ")


def script_commands(text: str) -> list[tuple[str, list[str]]]:
    """Each `python scripts/X.py …` in `text`: the script and its arguments, up to a comment; in a usage
    sketch, an [optional] part read as given unless it holds a METAVAR, and a|b|c choices read as a."""
    found = []
    for line in text.splitlines():
        match = re.search(r"python3? (scripts/\w+\.py)\b(.*)", line)
        if match:
            words = re.split(r"\s(?:#|\||2>&1|>)\s", match.group(2))[0]
            words = re.sub(r"\[[^]]*\b[A-Z]+\b[^]]*\]", " ", words).replace("[", " ").replace("]", " ")
            found.append((match.group(1), shlex.split(re.sub(r"(\S+?)\|\S+", r"\1", words))))
    return found


SCRIPT_COMMANDS = [("README.md", *c) for c in script_commands(_code(ROOT / "README.md"))] + [
    (f"{path.name} --help", *c) for path in sorted((ROOT / "scripts").glob("*.py"))
    for c in script_commands(_docstring_code(path))]


class Parsed(Exception):
    pass


REAL_PARSE_ARGS = argparse.ArgumentParser.parse_args


def isolate(monkeypatch) -> None:
    """What a script's main() changes in this process before it parses, undone after the test: the
    repo root it puts in sys.path, and the job start the training scripts mark in the environment
    (left behind, it would bill every later in-process training run from this moment)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(timing.JOB_STARTED_ENV, "")


def test_every_script_shows_a_command_and_the_readme_shows_seven():
    shown = {script for _, script, _ in SCRIPT_COMMANDS}
    assert shown == {f"scripts/{p.name}" for p in (ROOT / "scripts").glob("*.py")}
    assert len([c for c in SCRIPT_COMMANDS if c[0] == "README.md"]) >= 7


def parser_of(script: Path, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script's main() builds, taken from its parse_args call: nothing after it runs."""
    def hand_back(self, args=None, namespace=None):
        raise Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", hand_back)
    isolate(monkeypatch)
    monkeypatch.setattr(sys, "argv", [str(script)])
    with pytest.raises(Parsed) as caught:
        runpy.run_path(str(script), run_name="documented")["main"]()
    return caught.value.args[0]


@pytest.mark.parametrize("source, script, argv", SCRIPT_COMMANDS,
                         ids=[f"{s.split()[0]}:{p.split('/')[1]}#{i}" for i, (s, p, _) in enumerate(SCRIPT_COMMANDS)])
def test_a_documented_script_command_parses(source, script, argv, monkeypatch, capsys):
    parser = parser_of(ROOT / script, monkeypatch)
    try:
        REAL_PARSE_ARGS(parser, argv)
    except SystemExit as exc:
        pytest.fail(f"{source}: {script} {' '.join(argv)}\n{capsys.readouterr().err} (exit {exc.code})")


def _arguments(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arguments(sub, f"{prefix} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield f"{prefix} {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_argument_of_every_script_and_bench_stage_says_what_it_is_in_help(monkeypatch):
    arguments = [arg for script in sorted((ROOT / "scripts").glob("*.py"))
                 for arg in _arguments(parser_of(script, monkeypatch), script.name)]
    for stage, module_name in STAGES.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        arguments += _arguments(parser, f"bench {stage}")
    assert len(arguments) > 180
    assert [name for name, text in arguments if not text] == []
