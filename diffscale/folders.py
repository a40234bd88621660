"""The captioned custom-subject folder the studies read (the inputs summary, and the FLUX study's
photos): the format of ostris/ai-toolkit. (CIFAR-10's formats are diffscale.cifar's.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffscale.errors import DataError
from diffscale.io import read_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
TRIGGER = "[trigger]"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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
        caption = read_text(txt, what="caption").strip()
        if not caption:
            raise DataError(f"{txt}: caption is empty")
        out.append(CaptionedImage(image, caption.replace(TRIGGER, trigger)))
    return out
