#!/usr/bin/env python3
"""Runs one command as a child process and reports the kernel's accounting of it, for whole-process
comparisons (scripts/bench_vs_peers.sh): wall seconds, user + system CPU seconds, and the child's own peak
RSS (os.wait4's ru_maxrss; a script that `exec`s its program, as scripts/maxtext_peer/train.sh does, is
measured as that program). The command's stdout and stderr go to --log; one JSON line goes to --json.

Usage: proc_stats.py --log FILE --json FILE -- COMMAND [ARG ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command given")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    with open(a.log, "wb") as log:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    rec = {"cmd": cmd, "rc": p.returncode, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
           "max_rss_mb": ru.ru_maxrss / 1024.0, "loadavg_before": load}
    with open(a.json, "w") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"proc_stats: rc {p.returncode}, wall {wall:.1f} s, cpu {rec['cpu_s']:.1f} s, peak RSS "
          f"{rec['max_rss_mb']:.0f} MB (load before {load}): {' '.join(cmd)[:120]}", file=sys.stderr)
    sys.exit(0)  # the command's own status is in the JSON; the caller decides


if __name__ == "__main__":
    main()
