"""Image folders the studies read: a CIFAR-style class tree (the inputs summary) and a captioned
custom subject (the inputs summary, and the FLUX study's photos: the format of ostris/ai-toolkit)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffscale.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
TRIGGER = "[trigger]"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folder(root: str | Path) -> list[tuple[Path, str]]:
    """(image, class name) for every image in root/<class>/, classes sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: expected one sub-folder per class (e.g. {root}/cat/0000.jpg)")
    items = [(img, c.name) for c in classes for img in _images_in(c)]
    if not items:
        raise DataError(f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


@dataclass(frozen=True)
class CaptionedImage:
    image: Path
    caption: str  # with the trigger substituted


def subject_folder(root: str | Path, trigger: str) -> list[CaptionedImage]:
    """Images with same-name .txt captions; `[trigger]` in a caption becomes `trigger`.

    Every image needs its caption and every caption its image: a missing one is named.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: subject folder not found")
    images = _images_in(root)
    if not images:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    stems = {p.stem for p in images}
    orphans = sorted(p.name for p in root.glob("*.txt") if p.stem not in stems)
    if orphans:
        raise DataError(f"{root / orphans[0]}: caption has no image of the same name")
    out = []
    for image in images:
        txt = image.with_suffix(".txt")
        if not txt.is_file():
            raise DataError(f"{txt}: missing caption for {image.name}")
        caption = txt.read_text().strip()
        if not caption:
            raise DataError(f"{txt}: caption is empty")
        out.append(CaptionedImage(image, caption.replace(TRIGGER, trigger)))
    return out
