"""Renders the `make bench` table (Markdown) from the JSON the runs wrote; ratios are measured
in the same run: another engine's time per query divided by facematch's at the same batch."""

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone


def load(path):
    with open(path) as f:
        return json.load(f)


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
        mem = f"{int(mem) / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    import os
    return f"{model}, {os.cpu_count()} logical CPUs, {mem} RAM, {platform.system()} {platform.release()}; {rustc}"


def main():
    kernel_path, peers_path, e2e1_path, e2e2_path = sys.argv[1:5]
    kernel = load(kernel_path)
    peers = load(peers_path)
    pgvector = load(sys.argv[5]) if len(sys.argv) > 5 else None
    if pgvector:
        peers["rows"] += pgvector["rows"]
    e2e = [load(e2e1_path), load(e2e2_path)]
    faces = int(e2e[0]["faces_scanned"])
    fm = {r["batch"]: r for r in kernel}
    out = []
    out.append("# make bench")
    out.append("")
    out.append(f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}.")
    out.append(f"numpy {peers['numpy']}, faiss-cpu {peers['faiss']}; every engine on one thread; "
               f"{faces:,} faces × 128-d float32 (seeded, `facematch bench data`), top-10 cosine.")
    if pgvector:
        out.append(f"pgvector {pgvector['pgvector']} (`make bench-pgvector`): no index, one query per "
                   f"statement, no parallel workers; its answers hold {pgvector['recall']:.1%} of "
                   f"the exact top-10 (f64 numpy).")
    else:
        out.append("pgvector: not measured in this run (`make bench-pgvector` adds it).")
    out.append("")
    out.append("| engine | batch | ms per query | pairs/s | × facematch time |")
    out.append("|---|---:|---:|---:|---:|")
    for batch in sorted(fm):
        r = fm[batch]
        out.append(f"| facematch kernel ({r['level']}) | {batch} | {r['ms_per_query']:.3f} | "
                   f"{r['pairs_per_sec']:.3e} | 1.00 |")
        for p in (p for p in peers["rows"] if p["batch"] == batch):
            out.append(f"| {p['engine']} | {batch} | {p['ms_per_query']:.3f} | "
                       f"{p['pairs_per_sec']:.3e} | {p['ms_per_query'] / r['ms_per_query']:.2f} |")
    out.append("")
    out.append("End to end: `facematch run` (release build, inline), all histories claimed, scanned "
               "from Parquet shards and written back.")
    out.append("")
    out.append("| run | histories | scan s | total s | pairs/s (scan) | × 1 worker scan | scan ÷ bare kernel |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    histories = e2e[0]["claimed"]
    bare = fm.get(1024, fm[max(fm)])["ms_per_query"] * histories / 1e3
    for w, r in zip((1, 2), e2e):
        scan = r["scan_ms"] / 1e3
        total = (r["claim_ms"] + r["scan_ms"] + r["write_ms"]) / 1e3
        out.append(f"| -w {w} | {r['claimed']} | {scan:.2f} | {total:.2f} | "
                   f"{r['pairs_scored'] / scan:.3e} | {e2e[0]['scan_ms'] / r['scan_ms']:.2f} | "
                   f"{scan / bare:.2f} |")
    out.append("")
    out.append(f"Bare kernel for {histories} histories: {bare:.2f} s (the 1024 batch's time per query).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
