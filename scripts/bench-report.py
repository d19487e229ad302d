#!/usr/bin/env python3
"""Turns the runs of scripts/bench.sh into the Markdown report (stdout).

Inputs, all written by bench.sh:
  --csv       one row per measured run: started_utc, dataset, group, id, run,
              wall_s, user_s, sys_s, max_rss_kib, exit_code, raw_bytes,
              stored_bytes, new_bytes (a CSV without dataset, user_s and sys_s,
              from an older harness, is read as the main dataset without CPU)
  --commands  dataset, id, group, label, command (tab-separated), in table order
  --facts     key, value (tab-separated): the machine and the datasets
  --base-bytes  size of the main dataset's uncompressed base.tar, the unit of MB/s
  --manyfiles-base-bytes  the same for the many-files dataset, when measured

Only the successful runs of a command enter its statistics; a command with a
failed run is marked in the table. Timings are never judged: the "target"
column repeats the goals of issue 13 for the reader.
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
    # Issue 16: against the full restore of the same backup and repository.
    ("R5", "R3", "÷ full restore file://"),
    ("R6", "R3", "÷ full restore file://"),
    ("R7", "R3", "÷ full restore file://"),
    ("R5m", "R4", "÷ full restore MinIO"),
    ("R6m", "R4", "÷ full restore MinIO"),
    ("R7m", "R4", "÷ full restore MinIO"),
]

RSS_TARGET_MIB = 128

# Commands whose CPU figure is the client's only (the server's walsender does
# the reading and sending): pg_basebackup's.
CLIENT_ONLY = {"B1", "B2"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", required=True)
    p.add_argument("--commands", required=True)
    p.add_argument("--facts", required=True)
    p.add_argument("--base-bytes", type=int, required=True)
    p.add_argument("--manyfiles-base-bytes", type=int, default=None,
                   help="size of the many-files dataset's base.tar, when it was measured")
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
        ok = [r for r in rows if (r.get("exit_code") or "").strip() == "0" and num(r.get("wall_s")) is not None]
        self.failed = self.runs - len(ok)
        walls = [num(r["wall_s"]) for r in ok]
        rss = [num(r.get("max_rss_kib")) for r in ok if num(r.get("max_rss_kib")) is not None]
        self.median = statistics.median(walls) if walls else None
        self.min = min(walls) if walls else None
        self.max = max(walls) if walls else None
        self.rss_mib = max(rss) / 1024 if rss else None
        # CPU: user + system seconds of each run (a run without both is left
        # out, e.g. a CSV of a harness that did not record them).
        cpu = [(num(r.get("user_s")), num(r.get("sys_s"))) for r in ok]
        cpu = [(u, y) for u, y in cpu if u is not None and y is not None]
        self.cpu = statistics.median([u + y for u, y in cpu]) if cpu else None
        self.user = statistics.median([u for u, _ in cpu]) if cpu else None
        self.sys = statistics.median([y for _, y in cpu]) if cpu else None
        self.ok = ok
        # The servers' CPU (PostgreSQL, MinIO) during the command; absent
        # from CSVs of older harnesses.
        self.server_cpu = self.median_of("server_cpu_s")
        self.store_cpu = self.median_of("store_cpu_s")

    def median_of(self, col):
        v = [num(r.get(col)) for r in self.ok if num(r.get(col)) is not None]
        return statistics.median(v) if v else None

    def max_of(self, col):
        v = [num(r.get(col)) for r in self.ok if num(r.get(col)) is not None]
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


def read_commands(path):
    """dataset, id, group, label, command per line; a 4-column line (id,
    group, label, command: an older harness) is of the main dataset."""
    cmds = []
    for f in read_tsv(path, 5):
        if len(f) == 4:
            f = ["main"] + f
        if len(f) != 5:
            continue
        cmds.append(tuple(f))
    return cmds


def table(w, commands, stats, ratio, dataset, group, base_bytes):
    """One table: the commands of DATASET in GROUP (None: all groups)."""
    gb = base_bytes / 1e9 if base_bytes else None
    w("| command | median s | min–max s | MB/s | CPU-s | user / sys s | CPU-s per GB | server / store CPU-s | peak RSS MiB | ratio |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for ds, cid, g, lab, _cmd in commands:
        if ds != dataset or (group is not None and g != group):
            continue
        s = stats[(ds, cid)]
        mbs = "—" if not s.median or not base_bytes else f"{base_bytes / 1e6 / s.median:,.0f}"
        rng = "—" if s.min is None else f"{s.min:.2f}–{s.max:.2f}"
        rss = "—" if s.rss_mib is None else f"{s.rss_mib:,.0f}"
        us = "—" if s.cpu is None else f"{s.user:.2f} / {s.sys:.2f}"
        per_gb = "—" if s.cpu is None or not gb else f"{s.cpu / gb:.2f}"
        rs = [f"{fmt_ratio(ratio(ds, cid, peer))} {name}" for (c, peer, name) in RATIOS
              if c == cid and (ds, peer) in stats]
        if cid == "B1":
            rs = ["(the ceiling)"]
        elif not rs:
            rs = ["(peer)"]
        name = f"{cid} {cell(lab)}"
        if cid in CLIENT_ONLY:
            name += " ¹"
        if s.failed:
            name += f" — **{s.failed} of {s.runs} runs failed**"
        srv = "—" if s.server_cpu is None else f"{s.server_cpu:.2f}"
        sto = "—" if s.store_cpu is None else f"{s.store_cpu:.2f}"
        w(f"| {name} | {fmt_s(s.median)} | {rng} | {mbs} | {fmt_s(s.cpu)} | {us} | {per_gb} | {srv} / {sto} | {rss} | "
          f"{cell('; '.join(rs))} |")
    w("")


def main():
    a = parse_args()
    with open(a.csv, newline="", encoding="utf-8") as f:
        runs = list(csv.DictReader(f))
    commands = read_commands(a.commands)
    facts = read_tsv(a.facts, 2)
    stats = {}
    for ds, cid, _group, _label, _cmd in commands:
        stats[(ds, cid)] = Stats([r for r in runs
                                  if (r.get("dataset") or "main") == ds and r.get("id") == cid])
    label = {(c[0], c[1]): c[3] for c in commands}
    datasets = []
    for c in commands:
        if c[0] not in datasets:
            datasets.append(c[0])
    base = {"main": a.base_bytes, "manyfiles": a.manyfiles_base_bytes}

    def ratio(ds, cid, peer):
        s, p = stats.get((ds, cid)), stats.get((ds, peer))
        if not s or not p or s.median is None or not p.median:
            return None
        return s.median / p.median

    out = []
    w = out.append
    nruns = max((s.runs for s in stats.values()), default=0)
    w("# pgstow benchmark")
    w("")
    w(f"Median of {nruns} runs per command, the commands of a group alternating round-robin; "
      f"MB/s is the dataset's uncompressed base.tar divided by the median wall time "
      f"({fmt_mb(a.base_bytes)} for the main dataset); "
      "CPU-s is the median over the runs of user + system CPU seconds of all the command's processes "
      "(GNU time's %U + %S, the children it waited for included), also shown split into the medians of "
      "user and system seconds; CPU-s per GB divides it by the base.tar's size in GB (10⁹ bytes); "
      "server / store CPU-s are the medians of the CPU seconds PostgreSQL (the postmaster and all its "
      "processes) and MinIO spent while the command ran, — where not measured: on a machine whose cores "
      "they share, (CPU-s + server + store CPU-s) ÷ cores is a floor under the wall time that the command "
      "alone cannot lower; "
      "peak RSS is the largest process of the command (ru_maxrss), the highest over the runs. "
      "Ratios are median wall time ÷ the named peer's. How to read it: docs/benchmarks.md.")
    w("")
    w("¹ pg_basebackup: the CPU counted is the client's only. The files are read and sent by the "
      "server's walsender, whose CPU is in the PostgreSQL server process and is not counted; "
      "the same is true of the walsender that serves pgstow's backups, so compare backup CPU "
      "figures as client-side CPU.")
    w("")
    if "main" in datasets:
        for group, title in (("backup", "Backup"), ("restore", "Restore")):
            w(f"## {title}")
            w("")
            table(w, commands, stats, ratio, "main", group, a.base_bytes)
    # Sizes: compression and deduplication.
    if "main" in datasets:
        w("## Sizes")
        w("")
        sizes(w, stats, "main", a.base_bytes)

    if "manyfiles" in datasets:
        w("## Many small files")
        w("")
        w("The same commands on the second dataset, a cluster of many small tables "
          "(see \"Machine and dataset\"); MB/s and CPU-s per GB are of its own base.tar "
          f"({fmt_mb(a.manyfiles_base_bytes)}).")
        w("")
        table(w, commands, stats, ratio, "manyfiles", None, a.manyfiles_base_bytes)
        sizes(w, stats, "manyfiles", a.manyfiles_base_bytes)

    # Issue 13's targets, for the reader (never asserted).
    if "main" in datasets:
        targets(w, stats, ratio, label, a.base_bytes, a.manyfiles_base_bytes)

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
      "`/usr/bin/time -f '%e %U %S %M' bash -o pipefail -c '…'`, after a `sync`. "
      f"Every run is in {a.csv_name}.")
    w("")
    for ds in datasets:
        if len(datasets) > 1:
            w(f"{DATASET_TITLE.get(ds, ds)}:")
            w("")
        for d, cid, _g, lab, cmd in commands:
            if d == ds:
                w(f"- {cid} {lab}: `{cmd}`")
        w("")
    failed = sum(s.failed for s in stats.values())
    if failed:
        w(f"**{failed} measured run(s) failed**: their figures are left out above.")
        w("")
    sys.stdout.write("\n".join(out))


DATASET_TITLE = {"main": "Main dataset", "manyfiles": "Many small files"}


def sizes(w, stats, ds, base_bytes):
    """Compression and deduplication of dataset DS."""
    def frac(v):
        return "—" if v is None or not base_bytes else f"{v / base_bytes:.3f}"
    lz4, first, s3, second = (stats.get((ds, c)) for c in ("B2", "B3", "B4", "B5"))
    w("| what | bytes (median) | ÷ base.tar |")
    w("|---|---:|---:|")
    w(f"| base.tar (uncompressed) | {fmt_mb(base_bytes)} | 1.00 |")
    for s, what in ((lz4, "base.tar.lz4 (pg_basebackup client-lz4)"),
                    (first, "pgstow first backup, stored chunk bytes (WAL not counted)"),
                    (s3, "pgstow MinIO backup, stored chunk bytes")):
        if s is None:
            continue
        v = s.median_of("stored_bytes")
        w(f"| {what} | {fmt_mb(v)} | {frac(v)} |")
    dedup = None
    if second and first:
        nb = second.max_of("new_bytes")
        sb = first.median_of("stored_bytes")
        if nb is not None and sb:
            dedup = nb / sb
        w(f"| pgstow second backup, new bytes stored (highest of the runs) | {fmt_mb(nb)} | {frac(nb)} |")
    w("")
    if dedup is not None:
        w(f"The second backup of the unchanged data stored {dedup * 100:.2f}% of the first backup's stored bytes.")
        w("")
    return dedup


def targets(w, stats, ratio, label, base_bytes, manyfiles_base_bytes):
    """Issue 13's goals next to this run's figures, for the reader."""
    first, second = stats.get(("main", "B3")), stats.get(("main", "B5"))
    dedup = None
    if first and second:
        nb, sb = second.max_of("new_bytes"), first.median_of("stored_bytes")
        if nb is not None and sb:
            dedup = nb / sb
    w("## Against the targets of issue 13")
    w("")
    w("| target | goal | this run |")
    w("|---|---|---|")

    def verdict(v, goal, unit=""):
        if v is None:
            return "—"
        return f"{v:.2f}{unit} ({'met' if v <= goal else 'missed'})"

    def cpu_per_gb(ds, cid, base):
        s = stats.get((ds, cid))
        if not s or s.cpu is None or not base:
            return None
        return s.cpu / (base / 1e9)
    w(f"| backup file:// ÷ pg_basebackup client-lz4 | ≤ 1.0× | {verdict(ratio('main', 'B3', 'B2'), 1.0)} |")
    w(f"| backup MinIO ÷ backup file:// | ≤ 1.1× | {verdict(ratio('main', 'B4', 'B3'), 1.1)} |")
    for cid in ("B3", "B4"):
        w(f"| CPU-s per GB, {cid} {cell(label.get(('main', cid), ''))} | ≤ 5 | {verdict(cpu_per_gb('main', cid, base_bytes), 5.0)} |")
    w(f"| restore file:// ÷ tar -x uncompressed | ≤ 1.0× | {verdict(ratio('main', 'R3', 'R1'), 1.0)} |")
    w(f"| restore file:// ÷ lz4 -dc \\| tar -x | ≤ 0.7× | {verdict(ratio('main', 'R3', 'R2'), 0.7)} |")
    w(f"| second backup wall ÷ first | ≤ 0.6× | {verdict(ratio('main', 'B5', 'B3'), 0.6)} |")
    w(f"| second backup new bytes ÷ first's stored | ≤ 5% | "
      f"{'—' if dedup is None else f'{dedup * 100:.2f}% (' + ('met' if dedup <= 0.05 else 'missed') + ')'} |")
    w(f"| many files: backup ÷ pg_basebackup client-lz4 | ≤ 1.2× | {verdict(ratio('manyfiles', 'B3', 'B2'), 1.2)} |")
    w(f"| many files: restore ÷ tar -x | ≤ 1.5× | {verdict(ratio('manyfiles', 'R3', 'R1'), 1.5)} |")
    for ds, cid in (("main", "B3"), ("main", "B4"), ("main", "B5"), ("main", "R3"), ("main", "R4"),
                    ("manyfiles", "B3"), ("manyfiles", "R3")):
        s = stats.get((ds, cid))
        if s and s.rss_mib is not None:
            what = ("many files: " if ds == "manyfiles" else "") + f"{cid} {cell(label.get((ds, cid), ''))}"
            w(f"| peak RSS, {what} | ≤ {RSS_TARGET_MIB} MiB | {s.rss_mib:.0f} MiB "
              f"({'met' if s.rss_mib <= RSS_TARGET_MIB else 'missed'}) |")
    w("")


if __name__ == "__main__":
    main()
