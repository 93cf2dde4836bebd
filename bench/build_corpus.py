"""The corpus of `make build-bench`: every sample photo as it is, plus variants of each made with
Pillow — scaled (longest side 800, 560 and 400 px), mirrored or not, cropped four ways (whole, the
centre 90%, the top-left and bottom-right 85%) and saved as JPEG at quality 95, 80 and 60. The
variants are distinct files (distinct sha256), the same for every run (no randomness), and written
once: a corpus whose marker (OUT_DIR.complete, beside the folder so that the build does not read
it as a photo) exists is reused.

With COUNT, the corpus is COUNT small photos instead (longest side 200-419 px, mirrored or not,
JPEG quality 85 or 70), for the peak-RSS runs of many photos, where the encoding work per photo
does not matter.

Usage: build_corpus.py SAMPLES_DIR OUT_DIR [COUNT]
"""

import hashlib
import os
import sys

from PIL import Image, ImageOps

SIZES = (800, 560, 400)
CROPS = {
    "whole": (0.0, 0.0, 1.0, 1.0),
    "centre": (0.05, 0.05, 0.95, 0.95),
    "topleft": (0.0, 0.0, 0.85, 0.85),
    "bottomright": (0.15, 0.15, 1.0, 1.0),
}
QUALITIES = (95, 80, 60)


def originals(root):
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.lower().endswith((".jpg", ".jpeg", ".png", ".gif", ".bmp")):
                yield os.path.join(folder, name)


def variants(image):
    for size in SIZES:
        scale = size / max(image.size)
        scaled = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
        for mirrored in (False, True):
            turned = ImageOps.mirror(scaled) if mirrored else scaled
            for crop, (x0, y0, x1, y1) in CROPS.items():
                w, h = turned.size
                box = (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))
                cut = turned.crop(box)
                for quality in QUALITIES:
                    tag = f"{size}-{'m' if mirrored else 'o'}-{crop}-q{quality}"
                    yield tag, cut, quality


def small_photos(samples, out, count):
    """Writes `count` distinct small photos; returns how many were written."""
    bases = []
    for path in originals(samples):
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        scale = 420 / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        bases.append((os.path.basename(path).rsplit(".", 1)[0], image.resize(size, Image.Resampling.LANCZOS)))
    seen = set()
    for quality in (85, 70):
        for mirrored in (False, True):
            # Sides in a spread order (97 is prime to 220): any prefix of the list — 2,000
            # photos as much as 20,000 — holds small and large photos alike, so peak memory
            # compares between counts.
            for side in (200 + (k * 97) % 220 for k in range(220)):
                for stem, base in bases:
                    if len(seen) == count:
                        return len(seen)
                    scale = side / max(base.size)
                    cut = base.resize(
                        (max(1, round(base.width * scale)), max(1, round(base.height * scale))),
                        Image.Resampling.BILINEAR,
                    )
                    if mirrored:
                        cut = ImageOps.mirror(cut)
                    target = os.path.join(out, f"{stem}.{side}-{'m' if mirrored else 'o'}-q{quality}.jpg")
                    cut.save(target, "JPEG", quality=quality)
                    digest = hashlib.sha256(open(target, "rb").read()).hexdigest()
                    if digest in seen:
                        os.remove(target)
                        continue
                    seen.add(digest)
    return len(seen)


def main():
    samples, out = sys.argv[1], sys.argv[2]
    marker = out.rstrip("/") + ".complete"
    if os.path.exists(marker):
        print(open(marker).read().strip())
        return
    os.makedirs(out, exist_ok=True)
    if len(sys.argv) > 3:
        count = int(sys.argv[3])
        written = small_photos(samples, out, count)
        if written < count:
            sys.exit(f"build_corpus: only {written} distinct small photos can be made, not {count}")
        summary = f"build_corpus: {written} distinct small photos in {out}"
        with open(marker, "w") as f:
            f.write(summary + "\n")
        print(summary)
        return
    seen = set()
    written = 0
    for path in originals(samples):
        rel = os.path.relpath(path, samples)
        stem = rel.rsplit(".", 1)[0].replace(os.sep, "_")
        data = open(path, "rb").read()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in seen:
            seen.add(digest)
            ext = rel.rsplit(".", 1)[1].lower()
            with open(os.path.join(out, f"{stem}.orig.{ext}"), "wb") as f:
                f.write(data)
            written += 1
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        for tag, cut, quality in variants(image):
            target = os.path.join(out, f"{stem}.{tag}.jpg")
            cut.save(target, "JPEG", quality=quality)
            digest = hashlib.sha256(open(target, "rb").read()).hexdigest()
            if digest in seen:  # identical bytes would be one photo, not two
                os.remove(target)
                continue
            seen.add(digest)
            written += 1
    summary = f"build_corpus: {written} distinct photos in {out}"
    with open(marker, "w") as f:
        f.write(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
