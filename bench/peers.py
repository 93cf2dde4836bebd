"""The peers of `make bench`, on exactly the data facematch scores (faces.npy, queries.npy from
`facematch bench data`): numpy (GEMV for one query, GEMM for a batch, then argpartition for the
top N) and FAISS IndexFlatIP, both on one thread. Vectors are L2-normalised once, outside the
timing, so inner product is cosine, as facematch's kernel computes it. Prints JSON rows.
"""

import argparse
import json
import os
import sys
import time

# One thread for every BLAS numpy may use; must be set before numpy is imported.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402


def best_of(repeat, fn):
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def numpy_top_n(faces, queries, n):
    if len(queries) == 1:
        scores = faces @ queries[0]  # GEMV
        top = np.argpartition(-scores, n)[:n]
        return top[np.argsort(-scores[top])]
    scores = queries @ faces.T  # GEMM: (batch, faces)
    top = np.argpartition(-scores, n, axis=1)[:, :n]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--batches", default="1,16,256,1024,4096")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--numpy-max-batch", type=int, default=1024,
                        help="largest batch for numpy (its score matrix is batch × faces float32)")
    args = parser.parse_args()

    faces = np.load(os.path.join(args.data, "faces.npy"))
    queries = np.load(os.path.join(args.data, "queries.npy"))
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    count = len(faces)
    rows = []

    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(faces.shape[1])
    index.add(faces)

    for batch in [int(b) for b in args.batches.split(",")]:
        qs = np.ascontiguousarray(np.resize(queries, (batch, queries.shape[1])))
        peers = [("faiss IndexFlatIP", lambda: index.search(qs, args.n))]
        if batch <= args.numpy_max_batch:
            peers.append(("numpy", lambda: numpy_top_n(faces, qs, args.n)))
        for name, fn in peers:
            seconds = best_of(args.repeat, fn)
            rows.append({
                "engine": name,
                "batch": batch,
                "ms": seconds * 1e3,
                "ms_per_query": seconds * 1e3 / batch,
                "pairs_per_sec": count * batch / seconds,
            })
            print(f"{name} batch {batch}: {seconds * 1e3 / batch:.3f} ms/query", file=sys.stderr)
    json.dump({
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "rows": rows,
    }, sys.stdout)


if __name__ == "__main__":
    main()
