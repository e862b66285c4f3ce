"""``curves.png``: the reward and eval-accuracy curves of a run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Plot ``reward/mean``, ``accuracy`` and ``eval/accuracy`` against the step.

    Returns the PNG's path, or None when the metrics file has no steps yet.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    from rlvr.train.rundir import read_jsonl

    records = read_jsonl(metrics_path)
    if not records:
        return None

    def series(name: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[name]) for r in records if r.get(name) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    ax_r.plot(*series("reward/mean"), label="reward/mean")
    ax_r.set_xlabel("step")
    ax_r.set_title("reward")
    ax_r.grid(alpha=0.3)
    ax_r.legend()
    ax_a.plot(*series("accuracy"), label="train accuracy (sampled)", alpha=0.6)
    ax_a.plot(*series("eval/accuracy"), "o-", label="eval accuracy (greedy)")
    ax_a.set_xlabel("step")
    ax_a.set_ylim(0, 1)
    ax_a.set_title("accuracy")
    ax_a.grid(alpha=0.3)
    ax_a.legend()
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
