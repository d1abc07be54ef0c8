"""python -m export build [--only NAME] [--quick] | python -m export readme"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from models.training import use_offline_hub
from export.build import PROJECT_ROOT, ModelBuilder, build_model, default_cache_dir, log

README_DIFF_LINES = 60  # of the unified diff shown when `readme --check` fails

# name -> module defining BUILDER; imported on demand so one model's heavy imports stay its own.
BUILDER_MODULES = {
    "mnist-cnn": "export.mnist_cnn",
    "forecast-lstm": "export.forecast_lstm",
    "sentiment-transformer": "export.sentiment_transformer",
}


def load_builder(name: str) -> ModelBuilder:
    return importlib.import_module(BUILDER_MODULES[name]).BUILDER


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="train, export and verify the models")
    build.add_argument("--only", action="append", choices=sorted(BUILDER_MODULES), help="build only this model")
    build.add_argument("--quick", action="store_true", help="tiny data and few steps (for tests)")
    build.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    build.add_argument("--repository", type=Path, default=Path(os.environ.get("ORTSERVE_MODEL_REPOSITORY", "model_repository")))
    build.add_argument("--cache-dir", type=Path, default=None, help="default: $ORTSERVE_CACHE_DIR or ~/.cache/ortserve")

    readme = commands.add_parser("readme", help="regenerate the README's model table from the manifests")
    readme.add_argument("--repository", type=Path, default=Path("model_repository"))
    readme.add_argument("--check", action="store_true", help="change nothing; fail with a diff if the README is out of date")

    args = parser.parse_args(argv)
    use_offline_hub()

    if args.command == "readme":
        from export.readme import update_readme

        diff = update_readme(PROJECT_ROOT / "README.md", args.repository, check=args.check)
        if args.check and diff:
            changed = sum(line.startswith(("-", "+")) and not line.startswith(("---", "+++")) for line in diff)
            shown = diff[:README_DIFF_LINES]
            log("\n".join(line[:300] for line in shown) + (f"\n... ({len(diff) - len(shown)} more lines)" if len(diff) > len(shown) else ""))
            log(f"README.md's generated sections differ from the manifests in {args.repository} ({changed} lines): "
                f"run `python -m export readme --repository {args.repository}`")
            return 1
        return 0

    cache_dir = args.cache_dir or default_cache_dir()
    names = args.only or list(BUILDER_MODULES)
    results = []
    for name in names:
        log(f"== {name}")
        outcome = build_model(load_builder(name), args.repository, cache_dir, args.quick, args.force)
        log(f"== {name}: {outcome}")
        results.append((name, outcome))

    from export.readme import summary_table

    print(summary_table(args.repository, [name for name, _ in results], outcomes=dict(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
