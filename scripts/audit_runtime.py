"""Audit the serving dependencies (the project's own plus the `cpu` extra, as installed) with pip-audit.

Fails (exit 1) on a known vulnerability that has a fixed release; a vulnerability without a fix is
reported but does not fail. Training, test and benchmark packages are not part of what is served and
are left out. When the vulnerability service cannot be reached from this machine, every package comes
back unaudited: that is said loudly (exit 0, or exit 3 with --require-service).

    python scripts/audit_runtime.py [--require-service]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PROJECT = "ortserve"
EXTRAS = ("cpu",)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> dict[str, str]:
    """name -> installed version for every package the served code needs, followed transitively."""
    found: dict[str, str] = {}
    pending = [(PROJECT, EXTRAS)]
    while pending:
        name, extras = pending.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = canonical(dist.metadata["Name"])
        if key != PROJECT:
            if key in found:
                continue
            found[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            environment = {"extra": ""}
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
            )
            if wanted:
                pending.append((requirement.name, tuple(requirement.extras)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--require-service", action="store_true", help="fail when nothing could be audited")
    args = parser.parse_args()
    packages = runtime_closure()
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / "runtime.txt"
        requirements.write_text("".join(f"{name}=={version}\n" for name, version in sorted(packages.items())))
        result = subprocess.run(
            [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip",
             "--format", "json", "--progress-spinner", "off"],
            capture_output=True, text=True,
        )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed ({result.returncode}):\n{result.stderr.strip()[-2000:]}", file=sys.stderr)
        return 2
    audited = [d for d in report["dependencies"] if "skip_reason" not in d]
    fixable, unfixed = [], []
    for dep in audited:
        for vuln in dep.get("vulns", []):
            (fixable if vuln.get("fix_versions") else unfixed).append((dep["name"], dep["version"], vuln))
    print(f"runtime dependencies: {len(packages)}, audited: {len(audited)}")
    for name, version, vuln in fixable + unfixed:
        fix = ", ".join(vuln.get("fix_versions") or []) or "no fix released"
        print(f"  {name} {version}: {vuln['id']} (fixed in: {fix})")
    if not audited:
        print("WARNING: the vulnerability service could not be reached from here: nothing was audited", file=sys.stderr)
        return 3 if args.require_service else 0
    if fixable:
        print(f"{len(fixable)} known vulnerabilities have a fix: upgrade", file=sys.stderr)
        return 1
    print("no known vulnerability with a fix")
    return 0


if __name__ == "__main__":
    sys.exit(main())
