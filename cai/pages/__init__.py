"""What cai's HTML pages share: the Jinja2 environment, the templates, the plot helpers and colours.

The report, the audit page and the monitor page all render through here, so a
lower stage (the audit, the monitor) never imports the report that sits above it.
Every page is one self-contained file: plots are inline base64 PNGs drawn with
matplotlib's Agg backend.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
COLORS = {"initial": "#c0504d", "revised": "#4f81bd", "model": "#4f81bd", "baseline": "#9e9e9e",
          "comparison": "#6a9a3a", "chosen": "#4f81bd", "rejected": "#c0504d"}


@dataclass
class Plot:
    title: str
    src: str
    alt: str


def environment():
    """The Jinja2 environment of cai's HTML pages: autoescaped, strict, with the `num` and `pct` filters."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda x, spec=".3f": "-" if x is None else (format(x, spec) if isinstance(x, (int, float))
                                                                       and not isinstance(x, bool) else str(x))
    env.filters["pct"] = lambda x: "-" if x is None else f"{x:.1%}".replace(".0%", "%")
    return env


def pyplot():
    """matplotlib.pyplot on the Agg backend with the pages' style (imported on first use: it is slow)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titlesize": 10, "svg.hashsalt": "cai"})
    return plt


def png(fig) -> str:
    """The figure as a data: URL, closed afterwards."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
