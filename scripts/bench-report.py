#!/usr/bin/env python3
"""Turns the runs of scripts/bench.sh into the Markdown report (stdout).

Inputs, all written by bench.sh:
  --csv       one row per measured run: started_utc, group, id, run, wall_s,
              max_rss_kib, exit_code, raw_bytes, stored_bytes, new_bytes
  --commands  id, group, label, command (tab-separated), in table order
  --facts     key, value (tab-separated): the machine and the dataset
  --base-bytes  size of the uncompressed base.tar, the unit of MB/s

Only the successful runs of a command enter its statistics; a command with a
failed run is marked in the table. Timings are never judged: the "target"
column repeats the goals of issue 7 for the reader.
"""
import argparse
import csv
import statistics
import sys

# Ratio of a command's median wall time to a peer's: (id, peer id, name).
RATIOS = [
    ("B3", "B2", "÷ pg_basebackup client-lz4"),
    ("B4", "B3", "÷ pgstow file://"),
    ("B5", "B3", "÷ first backup"),
    ("R3", "R1", "÷ tar -x"),
    ("R3", "R2", "÷ lz4 | tar -x"),
    ("R4", "R3", "÷ pgstow restore file://"),
]

RSS_TARGET_MIB = 160


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", required=True)
    p.add_argument("--commands", required=True)
    p.add_argument("--facts", required=True)
    p.add_argument("--base-bytes", type=int, required=True)
    p.add_argument("--csv-name", default="runs.csv", help="name of the raw CSV, for the report's text")
    return p.parse_args()


def read_tsv(path, ncols):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                rows.append(line.split("\t", ncols - 1))
    return rows


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


class Stats:
    def __init__(self, rows):
        self.runs = len(rows)
        ok = [r for r in rows if r["exit_code"] == "0" and num(r["wall_s"]) is not None]
        self.failed = self.runs - len(ok)
        walls = [num(r["wall_s"]) for r in ok]
        rss = [num(r["max_rss_kib"]) for r in ok if num(r["max_rss_kib"]) is not None]
        self.median = statistics.median(walls) if walls else None
        self.min = min(walls) if walls else None
        self.max = max(walls) if walls else None
        self.rss_mib = max(rss) / 1024 if rss else None
        self.ok = ok

    def median_of(self, col):
        v = [num(r[col]) for r in self.ok if num(r[col]) is not None]
        return statistics.median(v) if v else None

    def max_of(self, col):
        v = [num(r[col]) for r in self.ok if num(r[col]) is not None]
        return max(v) if v else None


def cell(text):
    """Text for a Markdown table cell: a | would end the cell."""
    return text.replace("|", "\\|")


def fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}×"


def fmt_mb(n):
    return "—" if n is None else f"{n / 1e6:,.1f} MB"


def main():
    a = parse_args()
    with open(a.csv, newline="", encoding="utf-8") as f:
        runs = list(csv.DictReader(f))
    commands = read_tsv(a.commands, 4)
    facts = read_tsv(a.facts, 2)
    stats = {}
    for cid, _group, _label, _cmd in commands:
        stats[cid] = Stats([r for r in runs if r["id"] == cid])
    label = {c[0]: c[2] for c in commands}

    def ratio(cid, peer):
        s, p = stats.get(cid), stats.get(peer)
        if not s or not p or s.median is None or not p.median:
            return None
        return s.median / p.median

    out = []
    w = out.append
    nruns = max((s.runs for s in stats.values()), default=0)
    w("# pgstow benchmark")
    w("")
    w(f"Median of {nruns} runs per command, the commands of a group alternating round-robin; "
      f"MB/s is the uncompressed base.tar ({fmt_mb(a.base_bytes)}) divided by the median; "
      "peak RSS is the largest process of the command (ru_maxrss), the highest over the runs. "
      "Ratios are median wall time ÷ the named peer's. How to read it: docs/benchmarks.md.")
    w("")
    for group, title in (("backup", "Backup"), ("restore", "Restore")):
        w(f"## {title}")
        w("")
        w("| command | median s | min–max s | MB/s | peak RSS MiB | ratio |")
        w("|---|---:|---:|---:|---:|---|")
        for cid, g, lab, _cmd in commands:
            if g != group:
                continue
            s = stats[cid]
            mbs = "—" if not s.median else f"{a.base_bytes / 1e6 / s.median:,.0f}"
            rng = "—" if s.min is None else f"{s.min:.2f}–{s.max:.2f}"
            rss = "—" if s.rss_mib is None else f"{s.rss_mib:,.0f}"
            rs = [f"{fmt_ratio(ratio(cid, peer))} {name}" for (c, peer, name) in RATIOS if c == cid]
            if cid == "B1":
                rs = ["(the ceiling)"]
            elif not rs:
                rs = ["(peer)"]
            name = f"{cid} {cell(lab)}"
            if s.failed:
                name += f" — **{s.failed} of {s.runs} runs failed**"
            w(f"| {name} | {fmt_s(s.median)} | {rng} | {mbs} | {rss} | {cell('; '.join(rs))} |")
        w("")

    # Sizes: compression and deduplication.
    w("## Sizes")
    w("")
    lz4 = stats.get("B2")
    first, s3, second = stats.get("B3"), stats.get("B4"), stats.get("B5")
    w("| what | bytes (median) | ÷ base.tar |")
    w("|---|---:|---:|")
    w(f"| base.tar (uncompressed) | {fmt_mb(a.base_bytes)} | 1.00 |")
    for s, what in ((lz4, "base.tar.lz4 (pg_basebackup client-lz4)"),
                    (first, "pgstow first backup, stored chunk bytes (WAL not counted)"),
                    (s3, "pgstow MinIO backup, stored chunk bytes")):
        v = s.median_of("stored_bytes") if s else None
        w(f"| {what} | {fmt_mb(v)} | {'—' if v is None else f'{v / a.base_bytes:.3f}'} |")
    dedup = None
    if second and first:
        nb = second.max_of("new_bytes")
        sb = first.median_of("stored_bytes")
        if nb is not None and sb:
            dedup = nb / sb
        w(f"| pgstow second backup, new bytes stored (highest of the runs) | {fmt_mb(nb)} | "
          f"{'—' if nb is None else f'{nb / a.base_bytes:.3f}'} |")
    w("")
    if dedup is not None:
        w(f"The second backup of the unchanged data stored {dedup * 100:.2f}% of the first backup's stored bytes.")
        w("")

    # Issue 7's targets, for the reader (never asserted).
    w("## Against the targets of issue 7")
    w("")
    w("| target | goal | this run |")
    w("|---|---|---|")

    def verdict(v, goal):
        if v is None:
            return "—"
        return f"{v:.2f} ({'met' if v <= goal else 'missed'})"
    w(f"| backup file:// ÷ pg_basebackup client-lz4 | ≤ 1.0× | {verdict(ratio('B3', 'B2'), 1.0)} |")
    w(f"| backup MinIO ÷ backup file:// | ≤ 1.3× | {verdict(ratio('B4', 'B3'), 1.3)} |")
    w(f"| restore file:// ÷ tar -x uncompressed | ≤ 1.0× | {verdict(ratio('R3', 'R1'), 1.0)} |")
    w(f"| second backup wall ÷ first | ≤ 0.6× | {verdict(ratio('B5', 'B3'), 0.6)} |")
    w(f"| second backup new bytes ÷ first's stored | ≤ 5% | "
      f"{'—' if dedup is None else f'{dedup * 100:.2f}% (' + ('met' if dedup <= 0.05 else 'missed') + ')'} |")
    for cid in ("B3", "B4", "B5", "R3", "R4"):
        s = stats.get(cid)
        if s and s.rss_mib is not None:
            w(f"| peak RSS, {cid} {cell(label[cid])} | ≤ {RSS_TARGET_MIB} MiB | {s.rss_mib:.0f} MiB "
              f"({'met' if s.rss_mib <= RSS_TARGET_MIB else 'missed'}) |")
    w("")

    w("## Machine and dataset")
    w("")
    w("| | |")
    w("|---|---|")
    for k, v in facts:
        w(f"| {k} | {cell(v)} |")
    w("")
    w("## Commands")
    w("")
    w("P is the server's port, DIR a fresh empty directory, REPO a fresh empty repository directory, "
      "PREFIX a fresh prefix in the MinIO bucket (each per run). Each command runs under "
      "`/usr/bin/time -f '%e %M' bash -o pipefail -c '…'`, after a `sync`. "
      f"Every run is in {a.csv_name}.")
    w("")
    for cid, _g, lab, cmd in commands:
        w(f"- {cid} {lab}: `{cmd}`")
    w("")
    failed = sum(s.failed for s in stats.values())
    if failed:
        w(f"**{failed} measured run(s) failed**: their figures are left out above.")
        w("")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
