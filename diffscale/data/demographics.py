"""The demographic profile of the kept COCO images: tidy tables and the study's slide figures.

`demographics_table` counts the labels of the kept images (label, category, count, fraction);
`filter_table` is the report's tidy table (section, category, count, fraction): the filter steps
with the images each removed, the people label over all labelled images, the demographics and,
with an instances file, how the caption labels agree with COCO's person boxes. `plot_figures`
draws the four figures of the original slides: gender pie, age-group bars, group-size pie and the
ten most frequent activities.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from diffscale import atomic, figures
from diffscale.data.people import AGES, GENDERS, GROUPS

if TYPE_CHECKING:  # pandas is imported where used: the Snakefile imports this module for its paths
    import pandas as pd

LABELS = {"gender": GENDERS, "age": AGES, "group": GROUPS, "activity": None}
FIGURES = ("gender", "age", "group", "activities")
TOP_ACTIVITIES = 10
COLOURS = {
    "male": "#4C72B0", "female": "#DD8452", "mixed": "#8172B3", "neutral": "#9a9a9a",
    "single": "#55A868", "pair": "#4C72B0", "group": "#C44E52",
}


def demographics_table(kept: pd.DataFrame) -> pd.DataFrame:
    """label, category, count, fraction (of the kept images) for gender, age, group and activity."""
    import pandas as pd

    rows = []
    total = len(kept)
    for label, categories in LABELS.items():
        counts = kept[label].value_counts() if total else pd.Series(dtype="int64")
        if categories is None:  # activities: most frequent first, ties by name
            categories = sorted(counts.index, key=lambda c: (-int(counts[c]), c))
        for category in categories:
            count = int(counts.get(category, 0))
            rows.append({"label": label, "category": category, "count": count,
                         "fraction": count / total if total else 0.0})
    return pd.DataFrame(rows, columns=["label", "category", "count", "fraction"])


def filter_table(steps: Sequence[tuple[str, int]], n_images: int, labels: pd.DataFrame,
                 demographics: pd.DataFrame, person_boxes: set[int] | None = None) -> pd.DataFrame:
    """The report's tidy table: section, category, count, fraction."""
    import pandas as pd

    rows = [{"section": "filter", "category": "input images", "count": n_images, "fraction": 1.0}]
    for step, count in steps:
        rows.append({"section": "filter", "category": step, "count": count,
                     "fraction": count / n_images if n_images else 0.0})
    labelled = labels[labels["n_captions"] > 0]
    for value, name in ((True, "yes"), (False, "no")):
        count = int((labelled["people"] == value).sum())
        rows.append({"section": "people (all captioned images)", "category": name, "count": count,
                     "fraction": count / len(labelled) if len(labelled) else 0.0})
    for row in demographics.itertuples(index=False):
        rows.append({"section": row.label, "category": row.category, "count": row.count, "fraction": row.fraction})
    if person_boxes is not None:
        rows += _agreement(labelled, person_boxes)
    return pd.DataFrame(rows, columns=["section", "category", "count", "fraction"])


def _agreement(labelled: pd.DataFrame, person_boxes: set[int]) -> list[dict]:
    boxes = labelled["image_id"].isin(person_boxes)
    people = labelled["people"]
    n = len(labelled)
    cells = {
        "people label and person box": int((people & boxes).sum()),
        "people label, no person box": int((people & ~boxes).sum()),
        "person box, no people label": int((~people & boxes).sum()),
        "neither": int((~people & ~boxes).sum()),
    }
    rows = [{"section": "agreement with person boxes", "category": k, "count": v, "fraction": v / n if n else 0.0}
            for k, v in cells.items()]
    both = cells["people label and person box"]
    for name, denominator in (("precision", both + cells["people label, no person box"]),
                              ("recall", both + cells["person box, no people label"])):
        rows.append({"section": "agreement with person boxes", "category": name, "count": both,
                     "fraction": both / denominator if denominator else 0.0})
    return rows


def plot_figures(demographics: pd.DataFrame, out_dir: str | Path, prefix: str = "coco_filter") -> list[Path]:
    """<prefix>_gender.png, _age.png, _group.png, _activities.png in `out_dir`."""
    plt = figures.pyplot()
    out_dir = Path(out_dir)
    written = []
    for name in FIGURES:
        label = "activity" if name == "activities" else name
        part = demographics[demographics["label"] == label]
        total = int(part["count"].sum())
        fig, ax = plt.subplots(figsize=(5.2, 4.0), dpi=110)
        if total == 0:
            ax.text(0.5, 0.5, "no images kept", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        elif name in ("gender", "group"):
            shown = part[part["count"] > 0]
            ax.pie(shown["count"], labels=shown["category"], autopct=_percent,
                   colors=[COLOURS.get(c, "#cccccc") for c in shown["category"]], startangle=90,
                   counterclock=False, wedgeprops={"linewidth": 1, "edgecolor": "white"})
            ax.set_aspect("equal")
        elif name == "age":
            bars = ax.bar(part["category"], part["count"], color="#4C72B0")
            ax.bar_label(bars, labels=[f"{c:,}" for c in part["count"]], fontsize=8)
            ax.set_ylabel("images")
        else:
            top = part.head(TOP_ACTIVITIES).iloc[::-1]
            bars = ax.barh(top["category"], top["count"], color="#55A868")
            ax.bar_label(bars, labels=[f"{c:,}" for c in top["count"]], fontsize=8, padding=2)
            ax.set_xlabel("images")
        title = {"gender": "Gender", "age": "Age group", "group": "Group size",
                 "activities": f"Top {TOP_ACTIVITIES} activities"}[name]
        ax.set_title(f"{title} of the {total:,} people-centric images", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{prefix}_{name}.png"
        written.append(figures.save(fig, path))
    return written


def _percent(value: float) -> str:
    return f"{value:.0f}%" if value >= 3 else ""


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic.write_text(path, frame.to_csv(index=False, lineterminator="\n", float_format="%.6g"))


def figure_paths(out_dir: str | Path, prefix: str = "coco_filter") -> Iterable[Path]:
    return [Path(out_dir) / f"{prefix}_{name}.png" for name in FIGURES]
