"""The peer of `make build-bench`: Python face_recognition 1.3.0 (dlib-bin wheel) over a folder
of photos, one process per core as such a script would be run, each on one thread. Per photo it
does what `face_recognition.face_encodings(face_recognition.load_image_file(path))` does — HOG
detection upsampled once, 5-point landmarks, the ResNet encoder with one jitter — through the same
calls, split so that each stage is timed: read (file bytes), decode (Pillow to an RGB array),
detect, landmarks, encode.

Prints one JSON object: processes, wall seconds (model loading included, as a user pays it),
per-stage CPU seconds summed over processes, and every face: photo name, box (top, right,
bottom, left as face_recognition reports it) and encoding.

Usage: face_recognition_peer.py CORPUS_DIR PROCESSES [LIMIT]
"""

import io
import json
import multiprocessing
import os
import sys
import time

# One thread per process (the wheel's dlib has no BLAS; numpy may).
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

STAGES = ("read", "decode", "detect", "landmarks", "encode")
_models = {}


def load_models():
    import face_recognition.api as api

    _models["api"] = api


def encode_photo(path):
    api = _models["api"]
    timings = dict.fromkeys(STAGES, 0.0)
    clock = time.perf_counter
    t = clock()
    with open(path, "rb") as f:
        data = f.read()
    timings["read"] = clock() - t
    t = clock()
    try:
        image = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as e:  # a photo Pillow cannot read is a failure, as in facematch
        return os.path.basename(path), [], timings, str(e)
    timings["decode"] = clock() - t
    t = clock()
    rects = api._raw_face_locations(image, 1, "hog")
    timings["detect"] = clock() - t
    t = clock()
    shapes = [api.pose_predictor_5_point(image, r) for r in rects]
    timings["landmarks"] = clock() - t
    t = clock()
    encodings = [np.array(api.face_encoder.compute_face_descriptor(image, s, 1)) for s in shapes]
    timings["encode"] = clock() - t
    height, width = image.shape[:2]
    faces = []
    for r, e in zip(rects, encodings):
        top, right, bottom, left = api._trim_css_to_bounds(api._rect_to_css(r), image.shape)
        faces.append({"box": [top, right, bottom, left], "encoding": e.tolist()})
    return os.path.basename(path), faces, timings, None


def main():
    corpus, processes = sys.argv[1], int(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    paths = sorted(
        os.path.join(corpus, n) for n in os.listdir(corpus) if not n.startswith(".")
    )[:limit]
    started = time.perf_counter()
    with multiprocessing.Pool(processes, initializer=load_models) as pool:
        results = pool.map(encode_photo, paths, chunksize=4)
    wall = time.perf_counter() - started
    stages = dict.fromkeys(STAGES, 0.0)
    faces, failures = [], 0
    for name, found, timings, error in results:
        failures += error is not None
        for stage, secs in timings.items():
            stages[stage] += secs
        faces.extend({"photo": name, **face} for face in found)
    json.dump(
        {
            "tool": "face_recognition 1.3.0",
            "processes": processes,
            "photos": len(paths),
            "failures": failures,
            "wall_secs": wall,
            "stage_secs": stages,
            "faces": faces,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
