"""The README's generated tables: `python -m export readme` writes them from the manifests, `--check` fails
with a diff when the README says anything else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from export.readme import update_readme
from tests.conftest import ROOT


@pytest.mark.slow
def test_check_passes_on_a_fresh_readme_and_names_a_changed_line(quick_repository, tmp_path):
    readme = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    update_readme(readme, quick_repository)
    assert update_readme(readme, quick_repository, check=True) == []

    generated = next(line for line in readme.read_text().splitlines() if line.startswith("| **mnist-cnn** (this model) |"))
    by_hand = generated.replace("(this model)", "(this model, by hand)")
    edited = readme.read_text().replace(generated, by_hand)
    readme.write_text(edited)
    diff = update_readme(readme, quick_repository, check=True)
    assert [d for d in diff if d[:1] in "-+" and not d.startswith(("---", "+++"))] == [f"-{by_hand}", f"+{generated}"]
    assert readme.read_text() == edited, "--check changes nothing"


@pytest.mark.slow
def test_check_leaves_out_the_builds_timings_but_not_its_figures(quick_repository, tmp_path):
    """A fresh build on another machine trains in other minutes and measures other speed ratios, with the
    same weights and metrics: the check passes on those and fails on any figure of the model."""
    readme = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    update_readme(readme, quick_repository)
    fresh = readme.read_text()
    timed = re.sub(r"trained in [0-9.]+ min", "trained in 99.9 min", fresh)
    timed = re.sub(r"[0-9.]+x \(batch ", "9.99x (batch ", timed)
    assert timed != fresh
    readme.write_text(timed)
    assert update_readme(readme, quick_repository, check=True) == []
    line = next(line for line in timed.splitlines() if line.startswith("| **mnist-cnn** (this model) |"))
    figure = re.search(r"\| (0\.[0-9]+) \|", line).group(1)
    readme.write_text(timed.replace(line, line.replace(figure, "0.123", 1)))
    assert update_readme(readme, quick_repository, check=True), "a changed metric is caught"


@pytest.mark.slow
def test_the_command_fails_with_a_diff_summary_when_the_readme_is_out_of_date(quick_repository):
    """The project's README describes the full build, not the quick one: against the quick repository it is out of date."""
    result = subprocess.run(
        [sys.executable, "-m", "export", "readme", "--check", "--repository", str(quick_repository)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "+++ README.md (from" in result.stderr and "generated sections differ" in result.stderr
