"""README's Quickstart is the contract: CI runs exactly its two lines."""

from __future__ import annotations

import re


def quickstart_lines(readme: str) -> list[str]:
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_two_lines_and_ci_runs_both_verbatim(repo_root):
    lines = quickstart_lines((repo_root / "README.md").read_text())
    assert len(lines) == 2
    assert "snakemake --cores all" in lines[0] and "pytest" in lines[1]
    ci = (repo_root / ".ci" / "run").read_text().splitlines()
    for line in lines:
        assert line in ci, f".ci/run does not run README's line: {line}"
