"""The HTTP side of `make bench-serve` (scripts/bench-serve.sh): searches submitted to a running
`facematch serve` through its JSON API, each timed from the POST until its server-sent event
stream says FINISHED. Standard library only. Prints one JSON object.

Usage: serve_bench.py URL FIRST_FACE FACES SINGLES BURST
"""

import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def submit(host, port, face):
    conn = http.client.HTTPConnection(host, port, timeout=120)
    body = json.dumps({"face_id": face, "method": "cosine", "max_results": 10})
    conn.request("POST", "/api/searches", body, {"content-type": "application/json"})
    response = conn.getresponse()
    created = json.loads(response.read())
    if response.status != 201:
        raise SystemExit(f"POST /api/searches: {response.status} {created}")
    return conn, created["id"]


def wait_finished(conn, search_id):
    """Reads the search's event stream on `conn` until it ends; returns the last status."""
    conn.request("GET", f"/api/searches/{search_id}/events")
    response = conn.getresponse()
    status = None
    for raw in response:
        line = raw.decode().strip()
        if line.startswith("data: "):
            status = json.loads(line[6:])["status"]
            if status in ("FINISHED", "ERROR"):
                break
    conn.close()
    return status


def one_search(host, port, face, started=None):
    t0 = started if started is not None else time.perf_counter()
    conn, search_id = submit(host, port, face)
    status = wait_finished(conn, search_id)
    if status != "FINISHED":
        raise SystemExit(f"search {search_id} ended {status}")
    return (time.perf_counter() - t0) * 1000.0


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def main():
    url, first, faces, singles, burst = sys.argv[1], *map(int, sys.argv[2:6])
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname, parsed.port
    # Warm-up: the first search pays for connections and caches.
    one_search(host, port, first)
    single = [one_search(host, port, first + (i * 7919) % faces) for i in range(singles)]

    latencies = [None] * burst
    barrier = threading.Barrier(burst + 1)

    def worker(i):
        barrier.wait()
        latencies[i] = one_search(host, port, first + (i * 104729) % faces, started=start)

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
        "single_min_ms": min(single),
        "burst": burst,
        "burst_all_finished_ms": all_done,
        "burst_p50_ms": statistics.median(latencies),
        "burst_p95_ms": percentile(latencies, 95),
    }))


if __name__ == "__main__":
    main()
