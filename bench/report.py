"""Ratios and targets from one run's figures, a Markdown table and plots."""

from __future__ import annotations

from pathlib import Path

SENTIMENT, IMAGE, FORECAST = "/sentiment", "/classify-image", "/predict-sequence"
# Overhead at concurrency 1: median HTTP latency minus the median raw single-input session run.
LATENCY_BUDGET_MS = {SENTIMENT: 2.0, FORECAST: 2.0, IMAGE: 3.0}


def _at(report: dict, server: str, endpoint: str, concurrency: int) -> dict | None:
    return next((r for r in report["servers"][server][endpoint] if r["concurrency"] == concurrency), None)


def _target(name: str, value: float | None, bound: float, at_least: bool) -> dict:
    met = None if value is None else (value >= bound if at_least else value <= bound)
    return {"name": name, "value": None if value is None else round(value, 3),
            "target": f"{'>=' if at_least else '<='} {bound:g}", "met": met}


def ratios_and_targets(report: dict) -> dict:
    targets = []
    for concurrency in (16, 64):
        service = _at(report, "service", SENTIMENT, concurrency)
        naive = _at(report, "naive", SENTIMENT, concurrency)
        raw16 = report["limits"][SENTIMENT]["by_batch"].get("16", {}).get("rows_per_s")
        targets.append(_target(f"{SENTIMENT} c={concurrency}: service / raw limit at batch 16",
                               service["rps"] / raw16 if service and raw16 else None, 0.8, True))
        targets.append(_target(f"{SENTIMENT} c={concurrency}: service / naive server",
                               service["rps"] / naive["rps"] if service and naive else None, 10.0, True))
    for endpoint in (IMAGE, FORECAST):
        service, naive = _at(report, "service", endpoint, 64), _at(report, "naive", endpoint, 64)
        targets.append(_target(f"{endpoint} c=64: service / naive server",
                               service["rps"] / naive["rps"] if service and naive else None, 3.0, True))
    for endpoint, budget in LATENCY_BUDGET_MS.items():
        single = _at(report, "service", endpoint, 1)
        raw1 = report["limits"][endpoint]["by_batch"]["1"]["p50_ms"]
        targets.append(_target(f"{endpoint} c=1: HTTP p50 - raw batch-1 p50 (ms)", single["p50_ms"] - raw1, budget, False))
    runs = [r for server in report["servers"].values() for by_endpoint in server.values() for r in by_endpoint]
    targets.append(_target("errors in every run", sum(r["errors"] for r in runs), 0, False))
    # Not measured unless every answer of every run was checked against the model's in-process answer.
    checked = all(r.get("verified_answers", 0) == r["requests"] for r in runs)
    targets.append(_target("wrong answers in every run (each checked in-process)",
                           sum(r["wrong_answers"] for r in runs) if checked else None, 0, False))

    ratios = {}
    for endpoint in report["servers"]["service"]:
        ratios[endpoint] = {}
        for run in report["servers"]["service"][endpoint]:
            c = run["concurrency"]
            naive, fp32 = _at(report, "naive", endpoint, c), _at(report, "service-fp32", endpoint, c)
            ratios[endpoint][str(c)] = {
                "service_over_naive": round(run["rps"] / naive["rps"], 3) if naive and naive["rps"] else None,
                "service_over_fp32": round(run["rps"] / fp32["rps"], 3) if fp32 and fp32["rps"] else None,
            }
    return {"ratios": ratios, "targets": targets}


def write_markdown(report: dict, path: Path) -> None:
    meta = report["meta"]
    lines = [
        f"Measured {meta['date']} on `{meta['host']}`: {meta['cpu']}, {meta['usable_cpus']} usable CPUs "
        f"({meta['physical_cores']} physical cores), onnxruntime {meta['onnxruntime']}, providers {meta['providers']}"
        + (" (quick run: indicative only)" if meta["quick"] else "") + ".",
        f"Load: {meta['load_generator']}; {meta['seconds_per_run']:g} s per run.",
        "",
        "| endpoint | server | variant | " + " | ".join(f"c={c} req/s (p50 / p99 ms)" for c in meta["concurrency"]) + " | loadgen CPU s |",
        "|---|---|---|" + "---|" * len(meta["concurrency"]) + "---|",
    ]
    for endpoint in report["servers"]["service"]:
        model = report["limits"][endpoint]["model"]
        for server, by_endpoint in report["servers"].items():
            runs = by_endpoint[endpoint]
            variant = "fp32" if server == "service-fp32" else "PyTorch eager" if server == "naive" else report["models"][model]["variant"]
            cells = [f"{r['rps']:.0f} ({r['p50_ms']:.1f} / {r['p99_ms']:.1f})" + (f", {r['errors']} errors" if r["errors"] else "")
                     for r in runs]
            cpu = sum(r["loadgen_cpu_s"] for r in runs)
            lines.append(f"| `{endpoint}` | {server} | {variant} | " + " | ".join(cells) + f" | {cpu:.1f} |")
    lines += ["", "Raw in-process limit (rows/s, and p50 ms per session run), the served variant, same thread budget; the better of "
              "two runs, one right after the service and one at the end:", ""]
    sizes = sorted({int(b) for limit in report["limits"].values() for b in limit["by_batch"]})
    lines.append("| endpoint | variant | " + " | ".join(f"batch {b}" for b in sizes) + " |")
    lines.append("|---|---|" + "---|" * len(sizes))
    for endpoint, limit in report["limits"].items():
        cells = [f"{v['rows_per_s']:.0f} ({v['p50_ms']:.2f})" if (v := limit["by_batch"].get(str(b))) else "" for b in sizes]
        lines.append(f"| `{endpoint}` | {limit['variant']} | " + " | ".join(cells) + " |")
    lines += ["", "Batches the service formed during the run:", ""]
    for model, served in report["models"].items():
        batching = served["batching"]
        lines.append(f"- {model} ({served['variant']}): max_batch_size {batching['max_batch_size']}, "
                     f"{batching['batches']} batches, mean {batching['mean_batch']} rows, largest {batching['largest_batch']}")
    lines += ["", "| target | value | bound | met |", "|---|---|---|---|"]
    for target in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
        lines.append(f"| {target['name']} | {target['value']} | {target['target']} | {met} |")
    path.write_text("\n".join(lines) + "\n")


def _finish(axis, title: str, ylabel: str, levels: list[int], no_minor_ticks) -> None:
    axis.set(title=title, xlabel="concurrent clients", ylabel=ylabel, xscale="log", yscale="log")
    axis.xaxis.set_minor_locator(no_minor_ticks)
    axis.set_xticks(levels, [str(c) for c in levels])
    axis.legend(fontsize=7)


def write_plots(report: dict, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    endpoints = list(report["servers"]["service"])
    styles = {"service": "-o", "service-fp32": "--s", "naive": ":^", "service-h11-asyncio": "-.x"}
    figure, axes = plt.subplots(1, len(endpoints), figsize=(5 * len(endpoints), 4), squeeze=False)
    for axis, endpoint in zip(axes[0], endpoints):
        for server, by_endpoint in report["servers"].items():
            runs = by_endpoint[endpoint]
            axis.plot([r["concurrency"] for r in runs], [r["rps"] for r in runs], styles[server], label=server)
        limit = report["limits"][endpoint]
        best = max(v["rows_per_s"] for v in limit["by_batch"].values())
        axis.axhline(best, color="grey", linewidth=1, label=f"raw limit ({limit['variant']})")
        _finish(axis, endpoint, "requests/s", report["meta"]["concurrency"], NullLocator())
    figure.suptitle(f"Throughput, {report['meta']['cpu']} ({report['meta']['date'][:10]})", fontsize=10)
    figure.tight_layout()
    figure.savefig(f"{stem}-throughput.png", dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(1, len(endpoints), figsize=(5 * len(endpoints), 4), squeeze=False)
    for axis, endpoint in zip(axes[0], endpoints):
        for server, by_endpoint in report["servers"].items():
            runs = by_endpoint[endpoint]
            concurrency = [r["concurrency"] for r in runs]
            line = axis.plot(concurrency, [r["p50_ms"] for r in runs], styles[server], label=f"{server} p50")[0]
            axis.plot(concurrency, [r["p99_ms"] for r in runs], styles[server], color=line.get_color(), alpha=0.45,
                      label=f"{server} p99")
        _finish(axis, endpoint, "latency (ms)", report["meta"]["concurrency"], NullLocator())
    figure.suptitle(f"Latency p50 / p99, {report['meta']['cpu']} ({report['meta']['date'][:10]})", fontsize=10)
    figure.tight_layout()
    figure.savefig(f"{stem}-latency.png", dpi=100)
    plt.close(figure)
