"""The README's commands and code are the ones that CI runs and that examples/ holds."""

from __future__ import annotations

import re

import pytest
from e2e_support import ROOT

pytestmark = pytest.mark.timeout(60)

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def fenced(language: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return [body for lang, body in FENCE.findall(readme) if lang == language]


def significant_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def test_the_readme_has_two_commands_a_demo_and_the_tests() -> None:
    commands = [body.strip() for body in fenced("bash")]
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("underway demo"), demo
    assert tests.endswith(".venv/bin/pytest"), tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _demo, tests = (body.strip() for body in fenced("bash"))
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_the_readme_snippet_is_part_of_the_quickstart_example() -> None:
    (snippet,) = fenced("python")
    wanted = significant_lines(snippet)
    example = significant_lines((ROOT / "examples" / "quickstart.py").read_text())
    assert wanted, "the README shows no Python"
    starts = [n for n, line in enumerate(example) if line == wanted[0]]
    assert any(example[n : n + len(wanted)] == wanted for n in starts), (
        "the README's snippet is not a contiguous part of examples/quickstart.py (blank lines aside)"
    )


def test_the_readme_opens_with_a_screenshot_and_every_image_of_the_docs_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"!\[[^\]]+\]\(([^)]+)\)", readme)
    assert first is not None, "the README shows no image"
    assert readme.index(first.group(0)) < readme.index("## "), "the README opens with a screenshot"
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} shows {target}, which is not there"
