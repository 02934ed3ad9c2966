"""matplotlib as the dashboard's chart renderer: a figure sized in viewBox units, saved as SVG text and
turned into an ``<svg>`` element the page can embed (no JavaScript, nothing fetched, printable).

matplotlib is imported here only, lazily, when a chart is drawn: the server's start path never loads it.
Text stays text (``svg.fonttype = 'none'``) and math parsing is off, so a label from the data (an arm or
language name) is drawn as written; the SVG is parsed back with ElementTree, whose serializer escapes
every string again, so no label can become markup.  Marks that need a tooltip or a data attribute get a
``gid``; after saving, the group with that id gets the attributes and an SVG ``<title>`` (the tooltip).
"""

from __future__ import annotations

import io
import itertools
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, fromstring

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Colours shared by every chart (arm colours come from the data module).
INK = "#1d2430"
MUTED = "#6b7482"
GRID = "#e6e9ee"
AXIS = "#c3c9d2"
BETTER = "#2f9e63"
WORSE = "#d0464b"
BUDGET = "#d0464b"
FONT = 13  # body text size in viewBox units (1 unit = 1 pt at 72 dpi)

_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text as <text>, not glyph paths
    "svg.hashsalt": "opportune",  # the same data gives the same document
    "text.parse_math": False,  # "$" in a name is a dollar, not TeX
    "font.size": FONT,
    "axes.edgecolor": AXIS,
    "axes.labelcolor": MUTED,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelsize": FONT - 1,
    "ytick.labelsize": FONT - 1,
    "xtick.major.size": 0,
    "ytick.major.size": 0,
    "legend.frameon": False,
}
_SVG = "{http://www.w3.org/2000/svg}"
_XLINK = "{http://www.w3.org/1999/xlink}"


@dataclass
class Chart:
    """One figure being drawn; ``mark`` registers the attributes and tooltip of an artist."""

    figure: Figure
    width: float
    height: float
    marks: dict[str, tuple[dict[str, str], str | None]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def axes(self, left: float, right: float, top: float, bottom: float) -> Axes:
        """Axes inset by margins given in viewBox units, styled like the rest of the page."""
        w, h = self.width, self.height
        ax = self.figure.add_axes((left / w, bottom / h, 1 - (left + right) / w, 1 - (top + bottom) / h))
        ax.set_facecolor("none")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.tick_params(length=0, pad=6)
        return ax

    def mark(self, artist: Any, tooltip: str | None = None, /, **attrs: str) -> Any:
        """Give ``artist`` attributes (``class_`` -> class, ``data_arm`` -> data-arm) and a tooltip."""
        gid = f"mark-{next(self._ids)}"
        artist.set_gid(gid)
        names = {(k[:-1] if k.endswith("_") else k).replace("_", "-"): v for k, v in attrs.items()}
        self.marks[gid] = (names, tooltip)
        return artist


@contextmanager
def chart(width: float, height: float) -> Iterator[Chart]:
    """A figure of ``width`` x ``height`` viewBox units, drawn with the page's style."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    # DejaVu Sans has no weight 600: matplotlib measures such text at 700 (close enough, the browser
    # draws it in the page's font) and would log that on every new size, once per process.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    with mpl.rc_context(_RC):  # type: ignore[arg-type]
        figure = Figure(figsize=(width / 72, height / 72), dpi=72)
        figure.patch.set_alpha(0)
        yield Chart(figure, width, height)


def to_svg(drawn: Chart, *, label: str, id_: str | None) -> Element:
    """The figure as an ``<svg class="chart" role="img">`` element with a title and description."""
    import matplotlib as mpl
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buffer = io.StringIO()
    with mpl.rc_context(_RC):  # type: ignore[arg-type]
        FigureCanvasSVG(drawn.figure).print_svg(buffer, metadata={"Date": None, "Creator": None})
    root = fromstring(buffer.getvalue())
    for element in root.iter():
        element.tag = element.tag.removeprefix(_SVG)
        href = element.attrib.pop(f"{_XLINK}href", None)
        if href is not None:
            element.set("href", href)
        if element.tag == "text":
            _text_attributes(element)
    for child in [c for c in root if c.tag == "metadata"]:
        root.remove(child)
    for element in list(root.iter()):
        meta = drawn.marks.get(element.get("id", ""))
        if meta is None:
            continue
        attrs, tooltip = meta
        del element.attrib["id"]
        element.attrib.update(attrs)
        if tooltip is not None:
            title = Element("title")
            title.text = tooltip
            element.insert(0, title)
    if id_ is not None:
        _prefix_ids(root, id_, keep={a["id"] for a, _ in drawn.marks.values() if "id" in a})
    svg = Element(
        "svg",
        {
            "class": "chart",
            "viewBox": root.get("viewBox", f"0 0 {drawn.width:g} {drawn.height:g}"),
            "role": "img",
            "aria-label": label,
            "preserveAspectRatio": "xMidYMid meet",
        },
    )
    if id_ is not None:
        svg.set("id", id_)
    title = Element("title")
    title.text = label
    svg.append(title)
    svg.extend(list(root))
    return svg


_FONT_FAMILY = re.compile(r"font-family:[^;]*;?\s*")
_FONT_WEIGHT = re.compile(r"font-weight:\s*(\w+)")


def _text_attributes(element: Element) -> None:
    """Text takes the page's font (no font-family of its own) and states its weight as an attribute."""
    style = element.get("style", "")
    weight = _FONT_WEIGHT.search(style)
    if weight is not None:
        element.set("font-weight", {"bold": "700"}.get(weight.group(1), weight.group(1)))
    element.set("style", _FONT_FAMILY.sub("", style).strip().rstrip(";"))


def _prefix_ids(root: Element, prefix: str, *, keep: set[str]) -> None:
    """matplotlib names clip paths and markers by a hash of their shape; charts on one page could share
    a name, so each chart's names (and the references to them) get the chart's id in front."""
    names: set[str] = {name for e in root.iter() if (name := e.get("id"))} - keep
    if not names:
        return
    reference = re.compile(
        r"#(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True) if n) + r")\b"
    )
    for element in root.iter():
        name = element.get("id")
        if name in names:
            element.set("id", f"{prefix}-{name}")
        for key in ("href", "clip-path"):
            value = element.get(key)
            if value is not None:
                element.set(key, reference.sub(lambda m: f"#{prefix}-{m.group(1)}", value))
