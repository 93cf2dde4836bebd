"""The HTTP side of `make bench-serve` (scripts/bench-serve.sh): searches submitted to a running
`facematch serve` through its JSON API, each timed from its POST until the server-sent event
stream says it is FINISHED. Standard library only. Prints one JSON object.

Three ways in:
  single   one search at a time (POST /api/searches, then its event stream), SINGLES times;
  batch    BURST searches in one request (POST /api/searches with an array), followed on the one
           event stream the answer names, BATCHES times, each timed until the last is FINISHED;
  burst    BURST searches as BURST requests sent at once from as many threads, once.

Usage: serve_bench.py URL FIRST_FACE FACES SINGLES BURST BATCHES
"""

import http.client
import json
import re
import statistics
import sys
import threading
import time
import urllib.parse


def post(conn, body):
    conn.request("POST", "/api/searches", json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    created = json.loads(response.read())
    if response.status != 201:
        raise SystemExit(f"POST /api/searches: {response.status} {created}")
    return created


# The data line of an event that ends a search, as the server writes it (`web/api.rs`,
# StatusEvent): one regular expression over everything read, instead of a JSON parse per event.
ENDED = re.compile(rb'^data: \{"id":(\d+),"status":"(FINISHED|ERROR)"\}$', re.MULTILINE)


def follow(conn, path, count):
    """Reads the event stream at `path` on `conn` until `count` searches ended; all FINISHED?

    It reads whatever has arrived at once and finds the events that end a search with one
    regular expression: the client shares this machine with the server, and parsing every
    event would take the server's CPU and add to the very latency being measured."""
    conn.request("GET", path)
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {response.read()!r}")
    ended = {}
    pending = b""
    while len(ended) < count:
        data = response.read1(65536)
        if not data:
            break
        pending += data
        complete, _, pending = pending.rpartition(b"\n\n")
        for found in ENDED.finditer(complete):
            ended[int(found[1])] = found[2].decode()
    conn.close()
    bad = {i: s for i, s in ended.items() if s != "FINISHED"}
    if len(ended) != count or bad:
        raise SystemExit(f"{path}: {len(ended)} of {count} ended, not FINISHED: {bad}")


def request(face):
    return {"face_id": face, "method": "cosine", "max_results": 10}


def one_search(host, port, face, started=None):
    t0 = started if started is not None else time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    created = post(conn, request(face))
    follow(conn, created["events"], 1)
    return (time.perf_counter() - t0) * 1000.0


def one_batch(host, port, faces):
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    created = post(conn, [request(f) for f in faces])
    follow(conn, created["events"], len(faces))
    return (time.perf_counter() - t0) * 1000.0


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def main():
    url, first, faces, singles, burst, batches = sys.argv[1], *map(int, sys.argv[2:7])
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname, parsed.port
    face = lambda i: first + (i * 7919) % faces
    # Warm-up: the first search pays for connections and caches.
    one_search(host, port, first)
    single = [one_search(host, port, face(i)) for i in range(singles)]

    batch = [
        one_batch(host, port, [first + (b * 15485863 + i * 104729) % faces for i in range(burst)])
        for b in range(batches)
    ]

    latencies = [None] * burst
    barrier = threading.Barrier(burst + 1)

    def worker(i):
        barrier.wait()
        latencies[i] = one_search(host, port, first + (i * 104729 + 31) % faces, started=start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(burst)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    all_done = (time.perf_counter() - start) * 1000.0
    print(json.dumps({
        "single_p50_ms": statistics.median(single),
        "single_p95_ms": percentile(single, 95),
        "batch_p50_ms": statistics.median(batch),
        "batch_p95_ms": percentile(batch, 95),
        "burst": burst,
        "burst_all_finished_ms": all_done,
        "burst_p50_ms": statistics.median(latencies),
        "burst_p95_ms": percentile(latencies, 95),
    }))


if __name__ == "__main__":
    main()
