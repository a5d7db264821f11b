"""The report around the numbers: the machine and library versions it was measured with, the markdown table,
and writing both files (results.json and results.md beside it).

The rows themselves come from suite.py; this module only describes and formats them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from ..files import write_atomic


def machine_info(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": device,
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def versions() -> dict:
    from .. import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__, "gptviz": __version__}
    for dist in ("transformers", "transformer-lens", "numpy"):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def markdown(report: dict) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        f"# gptviz bench ({report['mode']})",
        "",
        f"{m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, device {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else "")
        + f"; {m['date']}",
        f"python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, gptviz {v['gptviz']}, "
        f"transformer_lens {v['transformer_lens'] or 'not installed'}",
        f"load average before {report['load_before']}, after {report['load_after']}",
        "",
    ]
    if not report.get("complete", True):
        lines += ["**partial**: the run was stopped (or is still running); rows below are the finished ones", ""]
    lines += [f"**warning**: {w}" for w in report["warnings"]] + ([""] if report["warnings"] else [])
    lines += [
        "ratio > 1 means gptviz is better (faster or smaller); paired = median of back-to-back ratios.",
        "",
        "| comparison | gptviz | peer | unit | ratio | paired | gptviz min-max | peer min-max | n | peer is | notes |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in report["comparisons"]:
        lines.append(
            f"| {c['name']} | {_fmt(c['ours'])} | {_fmt(c['peer'])} | {c['unit']} | {c['ratio']:.3f} | "
            f"{c['paired_ratio']:.3f} | {_fmt(c['ours_min'])}-{_fmt(c['ours_max'])} | "
            f"{_fmt(c['peer_min'])}-{_fmt(c['peer_max'])} | {c['repeats']} | {c['peer_name']} | "
            f"{c['notes']} |"
        )
    if report["skipped"]:
        lines += ["", "Skipped:"] + [f"- {s['name']}: {s['reason']}" for s in report["skipped"]]
    for e in report.get("mfu", []):
        if e["ours_mfu"] is not None:
            lines.append(f"- MFU {e['name']}: gptviz {e['ours_mfu']:.1%}, HF {e['peer_mfu']:.1%}")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str | os.PathLike) -> str:
    """Write out (JSON) and out.md (the table); return the table.

    Both go through a temporary file and a rename: the run rewrites them after every row, and a reader (or a
    crash) mid-write must still find the previous whole file.
    """
    out = Path(out)
    write_atomic(out, json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    write_atomic(out.with_suffix(".md"), table)
    return table
