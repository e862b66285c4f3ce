"""What every bench script does last: write its result as JSON and say where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` to ``path`` (parents created), indented JSON, and print the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return out


def run_header(
    bench: str, spec: str | Path | None = None, root: Path | None = None
) -> dict[str, Any]:
    """What a result says about its run: the bench, the spec if any (relative to ``root``,
    the repo, when inside it), the UTC date, the machine (platform, cores, load average at
    the end) and the command line."""
    import datetime
    import os
    import platform
    import sys

    head: dict[str, Any] = {"bench": bench}
    if spec is not None:
        path = Path(spec)
        inside = root is not None and path.is_relative_to(root)
        head["spec"] = str(path.relative_to(root)) if inside else str(spec)  # type: ignore[arg-type]
    return {
        **head,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
        },
        "command": " ".join(sys.argv),
    }
