"""pgvector's exact scan for `make bench-pgvector`, on the data facematch scores (faces.npy,
queries.npy from `facematch bench data`): the faces go into a `vector(128)` table without an
index, so `ORDER BY embedding <=> q LIMIT n` is an exact sequential scan (cosine distance), on
one core (no parallel workers). pgvector answers one query per statement, so a batch of b
queries is b statements; the time per query does not depend on the batch. Prints JSON rows.
"""

import argparse
import json
import sys
import time

import numpy as np
import psycopg

TABLE = "bench_faces"


def copy_rows(faces, first_id):
    """Rows of PostgreSQL's binary COPY format: (id int8, embedding vector), as pgvector's
    vector_recv reads it (int16 dim, int16 unused, float4 values, all big-endian)."""
    count, dim = faces.shape
    row = np.dtype([
        ("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"),
        ("vec_len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,)),
    ])
    rows = np.zeros(count, dtype=row)
    rows["fields"] = 2
    rows["id_len"] = 8
    rows["id"] = np.arange(first_id, first_id + count)
    rows["vec_len"] = 4 + 4 * dim
    rows["dim"] = dim
    rows["values"] = faces
    return rows


def load(conn, faces, first_id):
    count, dim = faces.shape
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint NOT NULL, embedding vector({dim}) NOT NULL)")
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        if cur.fetchone()[0] == count:
            return
        print(f"pgvector: loading {count:,} faces into {TABLE}", file=sys.stderr)
        cur.execute(f"TRUNCATE {TABLE}")
        rows = copy_rows(faces, first_id)
        with cur.copy(f"COPY {TABLE} (id, embedding) FROM STDIN (FORMAT binary)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            for start in range(0, count, 65536):
                copy.write(rows[start:start + 65536].tobytes())
            copy.write((-1).to_bytes(2, "big", signed=True))
        cur.execute(f"VACUUM ANALYZE {TABLE}")
    conn.commit()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--first-id", type=int, default=1)
    args = parser.parse_args()

    faces = np.load(f"{args.data}/faces.npy")
    queries = np.load(f"{args.data}/queries.npy")
    conn = psycopg.connect(args.url, autocommit=True)
    load(conn, faces, args.first_id)
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    conn.execute("SET max_parallel_workers_per_gather = 0")  # one core, as every engine here

    # The exact answer on normalised vectors, to check that the scan really is exact.
    unit = faces.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    sql = f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s::vector LIMIT %s"

    def search(q):
        text = "[" + ",".join(repr(float(x)) for x in q) + "]"
        return [r[0] for r in conn.execute(sql, (text, args.n), prepare=True).fetchall()]

    search(queries[0])  # warm the page cache and the prepared statement
    rows, agree, checked = [], 0, 0
    for batch in [int(b) for b in args.batches.split(",")]:
        qs = np.resize(queries, (batch, queries.shape[1]))
        started = time.perf_counter()
        answers = [search(q) for q in qs]
        seconds = time.perf_counter() - started
        for q, ids in zip(qs, answers):
            scores = unit @ (q.astype(np.float64) / np.linalg.norm(q))
            top = np.argpartition(-scores, args.n)[:args.n] + args.first_id
            agree += len(set(top.tolist()) & set(ids))
            checked += args.n
        rows.append({
            "engine": f"pgvector {version} exact scan",
            "batch": batch,
            "ms": seconds * 1e3,
            "ms_per_query": seconds * 1e3 / batch,
            "pairs_per_sec": len(faces) * batch / seconds,
        })
        print(f"pgvector batch {batch}: {seconds * 1e3 / batch:.1f} ms/query", file=sys.stderr)
    json.dump({"pgvector": version, "recall": agree / checked, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
