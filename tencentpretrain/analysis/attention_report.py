"""The attention-divergence results as files: attention_divergence.json (everything), .md (a table: one row
per model, one column per student layer) and .png (the same as a heat-map; only when matplotlib is
installed). Values in the table and the plot are JS divergences x 1000 (milli-nats), 3 significant digits."""
import math
import os

from tencentpretrain.analysis.attention import MAX_JS
from tencentpretrain.utils.io import atomic_write, write_json

NAME = "attention_divergence"
SCALE = 1000  # the table's and the plot's unit: milli-nats


def _cell(value):
    return f"{value * SCALE:.3g}"


def markdown_table(results):
    """Rows: models; columns: student layers (with the teacher layer each is compared with), the mean."""
    models = results["models"]
    width = max(m["layers"] for m in models.values())
    head = ["model", "heads"] + [f"layer {l}" for l in range(1, width + 1)] + ["mean"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (width + 1)]
    for name, m in models.items():
        cells = [f"{_cell(v)} (t{t})" for v, t in zip(m["js"], m["teacher_layers"])]
        cells += ["-"] * (width - len(cells))
        lines.append("| " + " | ".join([name, m["heads"], *cells, _cell(m["mean"])]) + " |")
    t = results["teacher"]
    note = (f"Mean Jensen-Shannon divergence between each student layer's attention distributions and those of the "
            f"teacher layer (tN) it is compared with, x {SCALE} (milli-nats; 0 = the same attention, "
            f"{MAX_JS * SCALE:.0f} = ln 2 x {SCALE} = disjoint), over heads and {results['tokens']} real query "
            f"positions of {results['instances']} held-out instances. Teacher: {t['layers']} layers, "
            f"{t['heads_num']} heads. heads: per-head = head h against teacher head h; averaged = the head-averaged "
            f"distributions (the student has another number of heads).")
    return "\n".join(lines) + "\n\n" + note + "\n"


def plot_heatmap(results, path):
    """The table as a heat-map (rows: models, columns: student layers, annotated cells, a colorbar);
    False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = results["models"]
    width = max(m["layers"] for m in models.values())
    grid = [[v * SCALE for v in m["js"]] + [math.nan] * (width - m["layers"]) for m in models.values()]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * width, 1.2 + 0.5 * len(grid)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0)
    top = max(v for row in grid for v in row if not math.isnan(v))
    for r, row in enumerate(grid):
        for c, value in enumerate(row):
            if not math.isnan(value):
                ax.text(c, r, f"{value:.3g}", ha="center", va="center", fontsize=8,
                        color="black" if value > 0.6 * top else "white")
    ax.set_xticks(range(width), [f"layer {l}" for l in range(1, width + 1)])
    ax.set_yticks(range(len(grid)), list(models))
    ax.set_xlabel("student layer")
    fig.colorbar(image, ax=ax, label=f"JS divergence x {SCALE} (milli-nats)")
    ax.set_title("attention: student vs teacher (0 = the same)", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return True


def write_results(results, output_dir, log=print):
    """attention_divergence.json, .md and (with matplotlib) .png in `output_dir`; returns the paths written."""
    base = os.path.join(output_dir, NAME)
    write_json(base + ".json", results)
    with atomic_write(base + ".md", "w", encoding="utf-8") as f:
        f.write(markdown_table(results))
    written = [base + ".json", base + ".md"]
    if plot_heatmap(results, base + ".png"):
        written.append(base + ".png")
    else:
        log("note: matplotlib is not installed, so no heat-map (pip install matplotlib); JSON and table written")
    return written
