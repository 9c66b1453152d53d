"""`distgan report RUN_DIR`: the run's curves and latest samples as PNG + one HTML
page, from `metrics.jsonl` and `samples/` alone, for users without W&B.

One figure per metric group (the first part of the name: `loss`, `perf`,
`train`, and whatever the evaluation code reports, e.g. `eval`), one panel per
sub-group (`loss/D/*`, `loss/G/*`), one line per metric. Writing is atomic per
file, so a report can be regenerated while the run is still training.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path

from distgan.errors import DistganError


def read_metrics(path: Path) -> list[dict]:
    """Records of metrics.jsonl; a torn last line (run killed mid-write) is ignored."""
    if not path.is_file():
        raise DistganError(f"{path} not found: is this a distgan run directory?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """{metric name: (steps, values)}, numbers only, in step order (`time`, the wall clock, is no metric)."""
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for rec in sorted(records, key=lambda r: r.get("step", 0)):
        for key, value in rec.items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key][0].append(int(rec["step"]))
                out[key][1].append(float(value))
    return dict(out)


def _groups(names: list[str]) -> dict[str, dict[str, list[str]]]:
    """{figure: {panel: [names]}}: `loss/D/real` -> figure `loss`, panel `loss/D`."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name in sorted(names):
        parts = name.split("/")
        figure = parts[0] if len(parts) > 1 else "other"
        panel = "/".join(parts[:2]) if len(parts) > 2 else (name if figure != "loss" else figure)
        groups[figure][panel].append(name)
    return groups


def _plot(figure: str, panels: dict[str, list[str]], data, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (panel, names) in zip(axes.flat, panels.items()):
        for name in names:
            steps, values = data[name]
            ax.plot(steps, values, label=name.removeprefix(panel + "/") or name, marker="." if len(steps) < 30 else None)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(figure)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(out)


def _copy_enlarged(src: Path, dst: Path, min_side: int = 384) -> None:
    """Copy a sample grid, enlarged by a whole factor (nearest, no blur) when small:
    an 8x8-pixel digit grid is unreadable at its own size in a browser."""
    from PIL import Image

    img = Image.open(src)
    factor = max(1, min_side // max(img.size))
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
    tmp = dst.with_name(f".{dst.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(dst)


def write_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write `<out_dir>/<figure>.png`, `samples.png` and `index.html`; return the HTML path."""
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        raise DistganError(f"{run_dir / 'metrics.jsonl'} holds no metrics yet")
    out_dir = out_dir or run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    data = series(records)
    figures = []
    for figure, panels in _groups(list(data)).items():
        path = out_dir / f"{figure}.png"
        _plot(figure, panels, data, path)
        figures.append(path.name)

    grids = sorted((run_dir / "samples").glob("step_*.png"))
    sample_html = "<p>no sample grid yet</p>"
    if grids:
        _copy_enlarged(grids[-1], out_dir / "samples.png")
        step = int(grids[-1].stem.removeprefix("step_"))
        sample_html = f'<h2>Samples at step {step}</h2>\n<img src="samples.png" alt="samples at step {step}">'

    last = {k: v for rec in records for k, v in rec.items()}
    rows = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>" if isinstance(v, float)
                     else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                     for k, v in sorted(last.items()))
    images = "\n".join(f'<h2>{html.escape(Path(f).stem)}</h2>\n<img src="{f}" alt="{html.escape(f)}">' for f in figures)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>distgan report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{max-width:100%}} td{{padding:0 1em}}</style></head>
<body><h1>{html.escape(str(run_dir))}</h1>
<p>{len(records)} records, last at step {last.get('step')}</p>
{sample_html}
{images}
<h2>Latest values</h2><table>{rows}</table>
</body></html>
"""
    index = out_dir / "index.html"
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(page)
    tmp.replace(index)
    return index
