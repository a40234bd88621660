"""Deterministic demo data: a COCO-format captioned set, a CIFAR-like folder, a custom subject.

Everything is seeded, so a re-run writes byte-identical files and Snakemake has nothing to redo.
Images are procedurally drawn (shapes over gradients) at varied sizes; they are stand-ins, so the
pipeline's timings and file handling are real while the content is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from diffscale import atomic

# Caption scenes about people: (subject phrases, activity phrases). Several subjects per scene so
# one image's five captions paraphrase each other the way COCO annotators do.
PEOPLE_SCENES = [
    (["a man", "a surfer", "a guy", "a young man"], ["riding a wave on a surfboard", "surfing a large wave"]),
    (["a woman", "a female tennis player", "a lady"], ["swinging a tennis racket", "playing tennis on a court"]),
    (["two men", "a couple of guys", "two male skiers"], ["skiing down a snowy slope", "on skis in the snow"]),
    (["a group of kids", "several children", "a bunch of young kids"], ["playing soccer in a field", "kicking a ball on the grass"]),
    (["a man and a woman", "a couple", "two people"], ["eating pizza at a table", "sharing a meal at a restaurant"]),
    (["a little girl", "a young girl", "a small child"], ["flying a kite on the beach", "holding a kite string"]),
    (["an elderly man", "an old man", "a senior citizen"], ["sitting on a park bench", "resting on a bench"]),
    (["a teenage boy", "a skateboarder", "a young skater"], ["doing a trick on a skateboard", "riding a skateboard down a ramp"]),
    (["a crowd of people", "many people", "a large group of people"], ["waiting at a train station", "standing on a platform"]),
    (["a chef", "a man in an apron", "a cook"], ["preparing food in a kitchen", "cooking in a restaurant kitchen"]),
]

OTHER_SCENES = [
    (["a plate", "a white plate", "a dish"], ["of food with broccoli", "filled with vegetables and rice"]),
    (["a red double decker bus", "a city bus", "a large bus"], ["driving down the street", "parked by the curb"]),
    (["a cat", "a gray cat", "a kitten"], ["sleeping on a couch", "curled up on a sofa"]),
    (["a teddy bear", "a stuffed bear", "a brown teddy bear"], ["sitting on a bed", "on top of a pillow"]),
    (["a giraffe", "a tall giraffe", "two giraffes"], ["standing in a grassy field", "eating leaves from a tree"]),
    (["a clock tower", "a tall tower", "an old clock tower"], ["against a blue sky", "in the middle of a city"]),
    (["a statue of a man", "a bronze statue", "a stone statue"], ["on a horse in a square", "in front of a building"]),
    (["a train", "a passenger train", "a freight train"], ["on the tracks", "pulling into a station"]),
]

IMAGE_SIZES = [(160, 120), (120, 160), (144, 108), (128, 128), (176, 96), (96, 144)]

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

SUBJECT_STEM = "subject_"  # subject_000.png with subject_000.txt, ...
SUBJECT_SETTINGS = ["on a beach", "in a forest", "on a city street", "in a kitchen", "in the snow",
                    "on a wooden table", "in a garden", "at night"]


def draw_image(rng: np.random.Generator, width: int, height: int, n_shapes: int = 6) -> Image.Image:
    """A gradient background with random ellipses and rectangles."""
    y, x = np.mgrid[0:height, 0:width]
    c0, c1 = rng.integers(0, 256, size=(2, 3))
    t = (x / max(width - 1, 1) * 0.6 + y / max(height - 1, 1) * 0.4)[..., None]
    base = (c0 * (1 - t) + c1 * t).astype(np.uint8)
    img = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(n_shapes):
        x0, x1 = sorted(rng.integers(0, width, size=2))
        y0, y1 = sorted(rng.integers(0, height, size=2))
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1 + 1, y1 + 1], fill=colour)
    return img


def _captions_for(rng: np.random.Generator, scenes: list, n: int = 5) -> tuple[int, list[str]]:
    scene = int(rng.integers(len(scenes)))
    subjects, actions = scenes[scene]
    return scene, [f"{subjects[int(rng.integers(len(subjects)))]} {actions[int(rng.integers(len(actions)))]}"
                   for _ in range(n)]


def coco_captions(n_images: int, people_fraction: float, seed: int) -> dict:
    """Captions json in the official COCO schema (info, licenses, images, annotations)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    n_people = round(n_images * people_fraction)
    for i in range(n_images):
        image_id = 100000 + i * 7  # ids are not contiguous in real COCO either
        width, height = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        if i < n_people:
            _, caps = _captions_for(rng, PEOPLE_SCENES)
            if i % 6 == 5:  # an ambiguous image: only two of five annotators mention the person
                _, other = _captions_for(rng, OTHER_SCENES)
                caps = caps[:2] + other[2:]
        else:
            _, caps = _captions_for(rng, OTHER_SCENES)
        images.append(dict(license=4, file_name=f"COCO_demo_{image_id:012d}.jpg", coco_url="", height=height,
                           width=width, date_captured="2013-11-14 11:18:45", flickr_url="", id=image_id))
        for caption in caps:
            annotations.append(dict(image_id=image_id, id=len(annotations) + 1, caption=caption))
    order = rng.permutation(n_images)  # COCO files are not sorted by kind
    images = [images[j] for j in order]
    return dict(
        info=dict(description="diffscale synthetic COCO-format demo", version="1.0", year=2026,
                  contributor="diffscale", date_created="2026-11-22"),
        licenses=[dict(url="https://creativecommons.org/licenses/by/2.0/", id=4, name="Attribution License")],
        images=images,
        annotations=annotations,
    )


def make_coco(captions_json: str | Path, image_dir: str | Path, n_images: int = 24,
              people_fraction: float = 0.6, seed: int = 0) -> dict:
    data = coco_captions(n_images, people_fraction, seed)
    first = min(data["images"], key=lambda entry: entry["id"])["file_name"]  # every such folder holds it
    with atomic.atomic_dir(image_dir, first) as tmp:
        for entry in data["images"]:
            rng = np.random.default_rng([seed, entry["id"]])
            draw_image(rng, entry["width"], entry["height"]).save(tmp / entry["file_name"], quality=90)
        atomic.write_json(captions_json, data)  # before the images appear: a bad path leaves neither
    return data


def make_cifar(out_dir: str | Path, per_class: int = 6, seed: int = 0) -> int:
    """32x32 JPEGs in <class>/NNNN.jpg, the layout of the CIFAR-10 image-folder exports."""
    with atomic.atomic_dir(out_dir, CIFAR_CLASSES[0]) as tmp:
        for k, name in enumerate(CIFAR_CLASSES):
            (tmp / name).mkdir()
            for i in range(per_class):
                rng = np.random.default_rng([seed, k, i])
                draw_image(rng, 32, 32, n_shapes=3).save(tmp / name / f"{i:04d}.jpg", quality=95)
    return per_class * len(CIFAR_CLASSES)


def make_subject(out_dir: str | Path, n_images: int = 6, seed: int = 0, size: int = 96) -> int:
    """A custom subject: the same object (a two-tone disc) in varied settings, each with a
    same-name .txt caption that uses the `[trigger]` placeholder."""
    with atomic.atomic_dir(out_dir, f"{SUBJECT_STEM}000.png") as tmp:
        for i in range(n_images):
            rng = np.random.default_rng([seed, 7, i])
            img = draw_image(rng, size, size, n_shapes=3)
            draw = ImageDraw.Draw(img)
            cx, cy = rng.integers(size // 4, 3 * size // 4, size=2)
            r = size // 5
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(230, 120, 20))
            draw.ellipse([cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2], fill=(40, 60, 200))
            setting = SUBJECT_SETTINGS[i % len(SUBJECT_SETTINGS)]
            img.save(tmp / f"{SUBJECT_STEM}{i:03d}.png")
            (tmp / f"{SUBJECT_STEM}{i:03d}.txt").write_text(f"a photo of [trigger] {setting}\n")
    return n_images
