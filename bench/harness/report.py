"""Results: medians with min/max, ratios to each scenario's limit, the goals, and the
outputs: latest.json, latest.md (a table), PNG plots (matplotlib)."""
import json
import os
import statistics

LIMITS = ("native", "curl")
GOALS_TEXT = {
    "hydrated": "hydrated reads >= 0.97x native (fanotify)",
    "cold_seq": "cold sequential >= 0.8x curl (fanotify)",
    "peers": "every scenario faster than rclone and HTTPDirFS (fanotify)",
    "fuse": "fanotify >= FUSE on every hydrated scenario",
}


class Scenario:
    """One scenario: a metric per subject, several samples each."""

    def __init__(self, key, title, unit, better="lower", limit=None, ratio="speed", hydrated=False, note=""):
        self.key, self.title, self.unit, self.better = key, title, unit, better
        self.limit, self.ratio_kind, self.hydrated, self.note = limit, ratio, hydrated, note
        self.samples, self.cpu, self.errors, self.extra = {}, {}, {}, {}

    def add(self, subject, value, cpu_s_per_gib=None):
        self.samples.setdefault(subject, []).append(value)
        if cpu_s_per_gib is not None:
            self.cpu.setdefault(subject, []).append(cpu_s_per_gib)

    def fail(self, subject, err):
        self.errors[subject] = str(err)[:300]

    def median(self, subject):
        xs = self.samples.get(subject)
        return statistics.median(xs) if xs else None

    def ratio(self, subject):
        """Against the limit: speed ratios are > 1 when faster than the limit; a fraction is
        value / limit (bytes fetched vs the whole file)."""
        if not self.limit or subject == self.limit:
            return None
        a, b = self.median(subject), self.median(self.limit)
        if not a or not b:
            return None
        if self.ratio_kind == "fraction":
            return a / b
        return b / a if self.better == "lower" else a / b

    def ratio_span(self, subject):
        """(worst, best) ratio over the subject's samples, against the limit's median."""
        b, xs = self.median(self.limit) if self.limit else None, self.samples.get(subject)
        if not b or not xs or self.ratio_kind != "speed" or not all(xs):
            return None
        rs = [b / x if self.better == "lower" else x / b for x in xs]
        return min(rs), max(rs)

    def beats(self, a, b):
        """Is subject a better than subject b here (None if either is missing)?"""
        x, y = self.median(a), self.median(b)
        if x is None or y is None:
            return None
        return x < y if self.better == "lower" else x > y

    def to_json(self):
        rows = {}
        for s, xs in self.samples.items():
            rows[s] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": xs,
                       "ratio_to_limit": self.ratio(s)}
            if s in self.cpu:
                rows[s]["cpu_s_per_gib"] = statistics.median(self.cpu[s])
        for s, e in self.errors.items():
            rows.setdefault(s, {})["error"] = e
        return {"key": self.key, "title": self.title, "unit": self.unit, "better": self.better,
                "limit": self.limit, "ratio": self.ratio_kind, "hydrated": self.hydrated, "note": self.note,
                "rows": rows, **({"extra": self.extra} if self.extra else {})}


def fmt(x, unit):
    if x is None:
        return "—"
    if unit == "bytes":
        return "%d" % x
    if unit in ("MiB/s", "IOPS", "MiB"):
        return "%.0f" % x
    return "%.3f" % x if x < 10 else "%.1f" % x


def goals(scenarios, subjects):
    """Each goal: met (bool or None if not measured) and the figures behind it."""
    out = {}
    F = "fanotify"

    def check(name, items):
        items = [i for i in items if i[1] is not None]
        out[name] = {"met": all(ok for _, ok, _ in items) if items else None,
                     "details": ["%s: %s (%s)" % (k, "ok" if ok else "NOT MET", why) for k, ok, why in items]}
    hyd = [(s.key, s.ratio(F) >= 0.97 if s.ratio(F) else None, "%.3fx" % (s.ratio(F) or 0))
           for s in scenarios if s.hydrated and s.limit == "native"]
    check("hydrated", hyd)
    cold = [(s.key, s.ratio(F) >= 0.8 if s.ratio(F) else None, "%.3fx" % (s.ratio(F) or 0))
            for s in scenarios if s.key == "cold_seq"]
    check("cold_seq", cold)
    peers = []
    for s in scenarios:
        for p in ("rclone", "httpdirfs"):
            if p in subjects and s.median(p) is not None:
                peers.append(("%s vs %s" % (s.key, p), s.beats(F, p),
                              "%s vs %s %s" % (fmt(s.median(F), s.unit), fmt(s.median(p), s.unit), s.unit)))
    check("peers", peers)
    fuse = []
    for s in scenarios:
        if s.hydrated and s.median("fuse") is not None:
            ok = s.beats(F, "fuse")
            if not ok and s.median(F) == s.median("fuse"):
                ok = True
            fuse.append((s.key, ok, "%s vs %s %s" % (fmt(s.median(F), s.unit), fmt(s.median("fuse"), s.unit), s.unit)))
    check("fuse", fuse)
    return out


def markdown(meta, scenarios, subjects, goal_results, plots):
    L = []
    L.append("# fanhsm benchmark: %s" % meta["mode"])
    L.append("")
    L.append("`%s` on %s; %s. %d run(s) per figure: median (min..max). Load average at start %s, at end %s."
             % (meta["command"], meta["started"], meta["machine"], meta["runs"], meta["loadavg_start"],
                meta["loadavg_end"]))
    L.append("")
    L.append("Ratio: against the scenario's limit (native reads of the same ext4, or curl from the same "
             "nginx); above 1 is faster than the limit. For `unzip -l` it is the fraction of the file fetched.")
    L.append("CPU: user+sys seconds of the daemon per GiB read (/proc/<pid>/stat).")
    L.append("")
    L.append("| scenario | subject | median | min..max | ratio to limit | CPU s/GiB |")
    L.append("|---|---|---|---|---|---|")
    for s in scenarios:
        first = True
        for subj in subjects:
            if subj not in s.samples and subj not in s.errors:
                continue
            title = "%s (%s, %s better)" % (s.title, s.unit, s.better) if first else ""
            first = False
            name = subjects[subj]
            if subj in s.errors and subj not in s.samples:
                err = s.errors[subj].replace("|", "/")[:120]
                L.append("| %s | %s | %s | | | |" % (title, name, err if err.startswith("skipped") else "failed: " + err))
                continue
            xs = s.samples[subj]
            r = s.ratio(subj)
            if subj == s.limit:
                rtxt = "limit"
            elif r is None:
                rtxt = "—"
            elif s.ratio_kind == "fraction":
                rtxt = "%.2f%%" % (100 * r)
            else:
                rtxt = "%.2fx" % r
            cpu = "%.2f" % statistics.median(s.cpu[subj]) if subj in s.cpu else ""
            L.append("| %s | %s | %s | %s..%s | %s | %s |" % (title, name, fmt(statistics.median(xs), s.unit),
                                                           fmt(min(xs), s.unit), fmt(max(xs), s.unit), rtxt, cpu))
    notes = [(s.title, s.note) for s in scenarios if s.note]
    if notes or meta.get("notes"):
        L.append("")
        L.append("Notes:")
        for n in meta.get("notes", []):
            L.append("- %s" % n)
        for t, n in notes:
            L.append("- %s: %s" % (t, n))
    L.append("")
    L.append("## Goals")
    L.append("")
    for k, g in goal_results.items():
        met = {True: "met", False: "**not met**", None: "not measured"}[g["met"]]
        L.append("- %s: %s" % (GOALS_TEXT[k], met))
        bad = [d for d in g["details"] if "NOT MET" in d]
        for d in bad:
            L.append("  - %s" % d)
    if plots:
        L.append("")
        for p in plots:
            L.append("![%s](%s)" % (os.path.splitext(p)[0], p))
    return "\n".join(L) + "\n"


def plots(outdir, scenarios, subjects):
    """latest-ratios.png (the main plot) and latest-mount.png; returns their file names."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    subj = [s for s in subjects if s not in LIMITS]
    sc = [s for s in scenarios if s.limit and s.ratio_kind == "speed"]
    if sc:
        fig, ax = plt.subplots(figsize=(12, 5.5))
        w = 0.8 / max(1, len(subj))
        for i, s in enumerate(subj):
            ys = [x.ratio(s) or 0 for x in sc]
            spans = [x.ratio_span(s) or (y, y) for x, y in zip(sc, ys)]
            err = [[max(0, y - lo) for y, (lo, _) in zip(ys, spans)], [max(0, hi - y) for y, (_, hi) in zip(ys, spans)]]
            ax.bar([j + i * w for j in range(len(sc))], ys, w, label=subjects[s], yerr=err, capsize=2,
                   error_kw={"elinewidth": 0.8})
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks([j + w * (len(subj) - 1) / 2 for j in range(len(sc))])
        ax.set_xticklabels([x.key for x in sc], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("speed relative to the limit (native or curl; log, 1 = limit)")
        ax.set_title("median speed relative to each scenario's limit (bars: min..max of the runs)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "latest-ratios.png"), dpi=90)
        plt.close(fig)
        made.append("latest-ratios.png")
    mt = [s for s in scenarios if s.key.startswith(("mount_time", "rss"))]
    if mt:
        fig, axes = plt.subplots(1, len(mt), figsize=(4 * len(mt), 4))
        axes = axes if len(mt) > 1 else [axes]
        for ax, x in zip(axes, mt):
            names = [s for s in subj if x.median(s) is not None]
            ax.bar(range(len(names)), [x.median(s) for s in names], color=["C%d" % subj.index(s) for s in names])
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([s for s in names], rotation=30, ha="right", fontsize=8)
            ax.set_title("%s (%s)" % (x.key, x.unit), fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "latest-mount.png"), dpi=90)
        plt.close(fig)
        made.append("latest-mount.png")
    return made


def write(outdir, meta, scenarios, subjects):
    os.makedirs(outdir, exist_ok=True)
    g = goals(scenarios, subjects)
    made = plots(outdir, scenarios, subjects)
    with open(os.path.join(outdir, "latest.json"), "w") as f:
        json.dump({"meta": meta, "subjects": subjects, "scenarios": [s.to_json() for s in scenarios], "goals": g},
                  f, indent=1)
    md = markdown(meta, scenarios, subjects, g, made)
    with open(os.path.join(outdir, "latest.md"), "w") as f:
        f.write(md)
    return md
