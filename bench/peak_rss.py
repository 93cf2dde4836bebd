"""Runs a command and reports the peak resident memory of it and of every process it starts: the
last VmHWM of /proc/PID/status read while each ran (every 20 ms), so a worker process of the
`processes` runner is measured apart from the driver that started it. (wait4's ru_maxrss cannot
tell them apart: it reports the largest of a process tree.)

Usage: peak_rss.py OUT_JSON COMMAND [ARG...]
The command's stdout and stderr pass through; OUT_JSON gets
{"driver_mb": ..., "workers_mb": [...]} (workers: the descendants whose command line has `worker`);
the exit status is the command's.
"""

import json
import os
import subprocess
import sys
import time


def children():
    """Maps every live pid to its parent pid."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(root):
    parents = children()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def high_water_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def command_line(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def main():
    out, command = sys.argv[1], sys.argv[2:]
    child = subprocess.Popen(command)
    peaks, lines = {}, {}
    while child.poll() is None:
        for pid in {child.pid} | descendants(child.pid):
            kb = high_water_kb(pid)
            if kb is not None:
                peaks[pid] = max(peaks.get(pid, 0), kb)
                lines.setdefault(pid, command_line(pid))
        time.sleep(0.02)
    workers = [
        peaks[pid] / 1024 for pid in sorted(peaks) if pid != child.pid and "worker" in lines[pid]
    ]
    with open(out, "w") as f:
        json.dump({"driver_mb": peaks.get(child.pid, 0) / 1024, "workers_mb": workers}, f)
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
