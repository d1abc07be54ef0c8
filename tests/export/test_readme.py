"""The README's generated tables: `python -m export readme` writes them from the manifests, `--check` fails
with a diff when the README says anything else."""

from __future__ import annotations

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
def test_the_command_fails_with_a_diff_summary_when_the_readme_is_out_of_date(quick_repository):
    """The project's README describes the full build, not the quick one: against the quick repository it is out of date."""
    result = subprocess.run(
        [sys.executable, "-m", "export", "readme", "--check", "--repository", str(quick_repository)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "+++ README.md (from" in result.stderr and "generated sections differ" in result.stderr
