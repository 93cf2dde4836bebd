"""Renders the `make build-bench` table (Markdown) from one run's JSON: facematch `dataset build`
with 1 worker and with every core against Python face_recognition one process per core, on the
same photos; the faces both found (same photo, boxes overlapping by IoU > 0.5) compared encoding
by encoding; where each tool's time went; and the peak RSS of the driver and of a worker.

Usage: build_render.py DIR CORES
DIR holds python.json (face_recognition_peer.py), fm-1.json and fm-all.json (`--json dataset
build` reports), fm-1-faces.csv (the 1-worker build's faces: image_uri, bbox, encoding,
detector), and rss-N.json / rss-N-build.json pairs (peak_rss.py and its build's report).
"""

import csv
import glob
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from render import machine  # noqa: E402


def load(path):
    with open(path) as f:
        return json.load(f)


def iou(a, b):
    """Intersection over union of two (top, right, bottom, left) boxes."""
    top, bottom = max(a[0], b[0]), min(a[2], b[2])
    left, right = max(a[3], b[3]), min(a[1], b[1])
    inter = max(0, bottom - top) * max(0, right - left)
    area = lambda r: max(0, r[2] - r[0]) * max(0, r[1] - r[3])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def facematch_faces(path):
    """The build's faces by photo name, boxes as (top, right, bottom, left)."""
    faces = {}
    with open(path) as f:
        for uri, bbox, encoding, detector in csv.reader(f):
            left, top, right, bottom = (int(v) for v in bbox.strip("{}").split(","))
            faces.setdefault(os.path.basename(uri), []).append(
                {
                    "box": (top, right, bottom, left),
                    "encoding": [float(v) for v in encoding.strip("{}").split(",")],
                    "detector": detector,
                }
            )
    return faces


def matches(ours, theirs):
    """Pairs of faces both found, greedily by IoU, and the count each found alone."""
    pairs, only_ours, only_theirs = [], 0, 0
    for photo in set(ours) | set(theirs):
        a, b = list(ours.get(photo, [])), list(theirs.get(photo, []))
        for face in a:
            best = max(b, key=lambda f: iou(face["box"], f["box"]), default=None)
            if best is not None and iou(face["box"], best["box"]) > 0.5:
                pairs.append((face, best))
                b.remove(best)
            else:
                only_ours += 1
        only_theirs += len(b)
    return pairs, only_ours, only_theirs


def shares(stages):
    total = sum(stages.values())
    ranked = sorted(((s, n) for n, s in stages.items() if s > 0), reverse=True)
    return ", ".join(f"{n} {100 * s / total:.0f}%" for s, n in ranked) + f" of {total:.0f} CPU-s"


def main():
    data, cores = sys.argv[1], int(sys.argv[2])
    py = load(os.path.join(data, "python.json"))
    fm1 = load(os.path.join(data, "fm-1.json"))
    fmall = load(os.path.join(data, "fm-all.json"))
    ours = facematch_faces(os.path.join(data, "fm-1-faces.csv"))
    theirs = {}
    for face in py["faces"]:
        theirs.setdefault(face["photo"], []).append(face)
    pairs, only_ours, only_theirs = matches(ours, theirs)
    distances = sorted(
        math.sqrt(sum((x - y) ** 2 for x, y in zip(a["encoding"], b["encoding"]))) for a, b in pairs
    )

    py_rate = len(py["faces"]) / py["wall_secs"] / py["processes"]
    rows = [
        ("facematch `dataset build`, 1 worker", fm1, 1),
        (f"facematch `dataset build`, {fmall['workers']} workers", fmall, fmall["workers"]),
    ]
    # HOG only, on worker processes, on the same corpus.
    same = os.path.join(data, "hog.json")
    if os.path.exists(same):
        hog = load(same)
        rows.append((f"facematch `--detector hog --runner {hog['runner']}`", hog, hog["workers"]))
    print("# `make build-bench`: photos to encodings, facematch against Python face_recognition\n")
    print(f"Machine: {machine()}.\n")
    print(
        f"Corpus: {py['photos']} distinct photos made from the sample photos (the originals, and "
        "scales, mirrors, crops and JPEG qualities of each; `bench/build_corpus.py`). Every tool "
        "detects with HOG upsampled once at full size, aligns with the 5-point landmarks and "
        "encodes with dlib's ResNet, one jitter; facematch runs its default `--detector auto` "
        "(dlib's CNN only on the photos where HOG found nothing) and, in the last row, HOG alone "
        "as face_recognition does. Wall time from start to "
        "finish, models loaded and (facematch) every face registered in Postgres.\n"
    )
    print("| tool | cores | photos | photos with a face | faces | wall s | faces/s | faces/s per core | per core vs Python |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r, n in rows:
        rate = r["faces"] / r["total_secs"]
        print(
            f"| {label} | {n} | {r['photos']} | {r['encoded']} | {r['faces']} | {r['total_secs']:.1f} "
            f"| {rate:.1f} | {rate / n:.1f} | {rate / n / py_rate:.2f}× |"
        )
    with_face = len({f["photo"] for f in py["faces"]})
    print(
        f"| Python face_recognition 1.3.0 (dlib-bin wheel), {py['processes']} processes | {py['processes']} "
        f"| {py['photos']} | {with_face} | {len(py['faces'])} | {py['wall_secs']:.1f} "
        f"| {len(py['faces']) / py['wall_secs']:.1f} | {py_rate:.1f} | 1.00× |"
    )
    cnn = sum(1 for faces in ours.values() for f in faces if f["detector"] == "cnn")
    print(
        f"\nFaces both found: {len(pairs)}; facematch alone: {only_ours} ({cnn} of its faces from the "
        f"CNN fallback); face_recognition alone: {only_theirs}. Euclidean distance between the two "
        f"encodings of a face both found: median {statistics.median(distances):.2e}, "
        f"max {distances[-1]:.2e} (two photos of one person are ~0.4 apart; the match threshold is 0.6). "
        "The large distances are faces whose box reaches past the image edge: "
        "`face_recognition.face_encodings(image)`, what the peer runs, aligns them on dlib's "
        "unclipped box, while facematch — like `face_encodings(image, face_locations(image))`, "
        "the reference figures of `datasets/tests/faces.rs` — aligns them on the clipped one.\n"
    )
    print("Where the time goes (stage shares of the workers' busy time):\n")
    print(f"- facematch, 1 worker: {shares(fm1['stage_secs'])}; registering in Postgres {fm1['register_secs']:.1f} s alongside")
    print(f"- facematch, {fmall['workers']} workers: {shares(fmall['stage_secs'])}")
    if os.path.exists(same):
        print(f"- facematch, HOG only: {shares(hog['stage_secs'])}")
    print(f"- face_recognition: {shares(py['stage_secs'])}")
    print("\nPeak resident memory of `dataset build --runner processes:2x1 --detector hog` (VmHWM, `bench/peak_rss.py`):\n")
    print("| photos | faces | driver MB | worker MB (each) | wall s |")
    print("|---|---:|---:|---:|---:|")
    runs = []
    if os.path.exists(same):
        runs.append((f"{hog['photos']} (the corpus above)", same, os.path.join(data, "hog-rss.json")))
    for path in sorted(glob.glob(os.path.join(data, "rss-*-build.json")), key=lambda p: int(p.split("-")[-2])):
        runs.append((None, path, path.replace("-build.json", ".json")))
    for label, path, rss_path in runs:
        build, rss = load(path), load(rss_path)
        label = label or f"{build['photos']} small (200-419 px), shards of 2,000 faces"
        workers = " / ".join(f"{w:.0f}" for w in rss["workers_mb"])
        print(f"| {label} | {build['faces']} | {rss['driver_mb']:.0f} | {workers} | {build['total_secs']:.1f} |")

if __name__ == "__main__":
    main()
