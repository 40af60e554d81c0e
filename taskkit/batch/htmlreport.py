"""A job's timeline as one self-contained HTML page (``taskkit report``, ``taskkit local run
--report FILE.html``): every attempt on a time axis, one lane per node, coloured by what
became of it, with a legend, hover details, totals and the work saved.

Invariants: :func:`render` is pure (a :class:`~taskkit.runner.timeline.Timeline` in, the page
out); the page needs no network when viewed (inline CSS, script and SVG; no font, image or
script from elsewhere). Nothing from the journal reaches the page unescaped: text in the
markup goes through :func:`html.escape`, the data the script draws is JSON with ``<``, ``>``
and ``&`` escaped (no ``</script>`` can end it), and the script puts it in the page only as
text (``textContent``, attributes), never as markup. :func:`write_report` writes a page whole
or not at all (written aside, then renamed).
"""

from __future__ import annotations

import contextlib
import datetime
import html
import json
import os
import stat
from collections import Counter
from pathlib import Path

from taskkit.exceptions import IOFailure, from_os_error
from taskkit.runner.timeline import KINDS, Timeline
from taskkit.transfer.summary import format_size

__all__ = ["check_target", "render", "write_report"]

#: The tasks listed by name in the table of those that did not succeed; the rest are counted.
MAX_LISTED = 1000

_COLOURS = {
    "success": "#2e9d4f",
    "retryable": "#e8a33d",
    "permanent": "#c8362f",
    "killed": "#7a4fb5",
    "interrupted": "#8e8e8e",
    "running": "#3b7dd8",
    "met": "#9fd8a8",
    "refused": "#f2a8a3",
}
_MEANING = {
    "success": "attempt succeeded and published",
    "retryable": "attempt failed; a retry may succeed",
    "permanent": "attempt failed for good",
    "killed": "taskkit was stopped by a signal (Batch ended the task, a wall clock)",
    "interrupted": "attempt died without a word (kill -9, a lost or preempted node)",
    "running": "attempt still running when the report was made",
    "met": "goal already met: nothing run",
    "refused": "permanent failure already recorded: nothing run",
}


def render(timeline: Timeline) -> str:
    """The page of ``timeline``."""
    t0 = timeline.start
    tasks = {row.task: i for i, row in enumerate(timeline.tasks)}
    nodes = {node: i for i, node in enumerate(timeline.nodes)}
    rows = [0] * len(timeline.nodes)
    reasons: dict[str, int] = {}
    flat: list[int | None] = []
    for bar in timeline.bars:
        lane = nodes[bar.node]
        rows[lane] = max(rows[lane], bar.row + 1)
        flat += [
            tasks[bar.task],
            bar.attempt,
            lane,
            bar.row,
            round((bar.start - t0) * 1000),
            round((bar.end - bar.start) * 1000),
            KINDS.index(bar.kind),
            bar.exit_code,
            reasons.setdefault(bar.reason, len(reasons)),
        ]
    data = {
        "t0": t0,
        "span": round((timeline.end - t0) * 1000),
        "kinds": list(KINDS),
        "nodes": list(timeline.nodes),
        "rows": rows,
        "tasks": [row.task for row in timeline.tasks],
        "reasons": list(reasons),
        "bars": flat,
    }
    return _PAGE.format(
        title=_e(f"taskkit report: job {timeline.job}"),
        css=_CSS,
        header=_header(timeline),
        legend=_legend(timeline),
        saved=_saved(timeline),
        failures=_failures(timeline),
        problems=_problems(timeline),
        data=_script_json(data),
        script=_SCRIPT,
    )


def check_target(path: str) -> None:
    """Refuse, before anything is read, a page that could not be written at ``path``: its
    folder missing or not a folder, or ``path`` a directory (local I/O, 74)."""
    if not path:
        raise IOFailure("-o '': no file named", path=path)
    target = Path(path).expanduser()
    folder = target.parent
    if target.is_dir():
        raise IOFailure(f"-o {path!r} is a directory, not a file", path=path)
    if not folder.is_dir():
        why = "is not a directory" if folder.exists() else "does not exist"
        raise IOFailure(f"-o {path!r}: the folder {str(folder)!r} {why}", path=path)


def write_report(page: str, path: str) -> int:
    """Write ``page`` at ``path`` whole or not at all; its size in bytes. A device or a FIFO
    there (``/dev/null``, a pipe) is written into, never replaced by a file."""
    check_target(path)
    target = Path(path).expanduser()
    data = page.encode("utf-8")
    try:
        special = not stat.S_ISREG(target.stat().st_mode)
    except OSError:  # nothing there yet (or nothing to learn): the file is made aside
        special = False
    if special:  # a device or a FIFO: write through it, no rename over it
        try:
            with open(target, "wb") as file:
                file.write(data)
        except OSError as exc:
            raise from_os_error(exc, f"cannot write the report {path!r}") from exc
        return len(data)
    aside = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            with open(aside, "wb") as file:
                file.write(data)
            os.replace(aside, target)
        except OSError as exc:
            exc.filename = str(target)  # the target named, not the file set aside
            raise from_os_error(exc, "cannot write the report") from exc
    finally:
        with contextlib.suppress(OSError):
            aside.unlink()
    return len(data)


# -- the parts of the page ---------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _script_json(data: object) -> str:
    """JSON that cannot end the script element it sits in, nor start markup inside it."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _stamp(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _header(timeline: Timeline) -> str:
    outcomes = Counter(row.outcome for row in timeline.tasks)
    shown = ", ".join(
        f'<span class="outcome" data-outcome="{_e(name)}">{count} {_e(name)}</span>'
        for name, count in sorted(outcomes.items(), key=lambda item: (-item[1], item[0]))
    )
    attempts = sum(row.attempts for row in timeline.tasks)
    span = (
        f"{_e(_stamp(timeline.start))} to {_e(_stamp(timeline.end))} "
        f"({_e(_duration(timeline.end - timeline.start))})"
        if timeline.bars
        else "nothing ran"
    )
    return (
        f"<h1>Job <code>{_e(timeline.job)}</code></h1>"
        f'<p class="where">journal {_e(timeline.state)}; read {_e(_stamp(timeline.read_at))}</p>'
        '<dl class="totals">'
        f'<div><dt>tasks</dt><dd id="n-tasks">{len(timeline.tasks)}</dd></div>'
        f'<div><dt>attempts</dt><dd id="n-attempts">{attempts}</dd></div>'
        f'<div><dt>nodes</dt><dd id="n-nodes">{len(timeline.nodes)}</dd></div>'
        f'<div><dt>span</dt><dd id="span">{span}</dd></div>'
        "</dl>"
        f'<p class="outcomes">tasks: {shown or "none"}</p>'
    )


def _legend(timeline: Timeline) -> str:
    counts = Counter(bar.kind for bar in timeline.bars)
    items = "".join(
        f'<li class="item{"" if counts[kind] else " none"}" data-kind="{kind}" '
        f'title="{_e(_MEANING[kind])}"><span class="sw k-{kind}"></span>{kind} '
        f'<b class="count">{counts[kind]}</b></li>'
        for kind in KINDS
    )
    return f'<ul class="legend">{items}</ul>'


def _saved(timeline: Timeline) -> str:
    saved = timeline.saved
    rows = [
        (
            "files-not-moved",
            "files not moved (already in place, or linked from the node cache)",
            f"{saved.files_not_moved} ({format_size(saved.bytes_not_moved)})",
        ),
        (
            "files-moved",
            "files moved",
            f"{saved.files_moved} ({format_size(saved.bytes_moved)})",
        ),
        (
            "steps-not-recomputed",
            "steps an earlier attempt finished, not run again by the one that succeeded",
            f"{saved.steps_not_recomputed} of {saved.steps_done} steps recorded",
        ),
        (
            "short-circuited",
            "runs that started no attempt (goal met, or permanent failure recorded)",
            f"{saved.runs_met + saved.runs_refused} ({saved.runs_met} met, "
            f"{saved.runs_refused} refused)",
        ),
        (
            "not-moved-by-met",
            "files the runs whose goal was met did not move again (as their success moved)",
            f"{saved.files_not_moved_by_met} ({format_size(saved.bytes_not_moved_by_met)})",
        ),
    ]
    body = "".join(
        f'<tr id="{key}"><th>{_e(what)}</th><td>{_e(value)}</td></tr>' for key, what, value in rows
    )
    note = (
        f'<p class="note">{saved.unrecorded} attempts ended without a record of their '
        "transfers (no inputs or outputs, or written by an older taskkit).</p>"
        if saved.unrecorded
        else ""
    )
    return f'<table class="saved">{body}</table>{note}'


def _failures(timeline: Timeline) -> str:
    failed = [row for row in timeline.tasks if row.outcome != "success"]
    if not failed:
        return '<p id="all-succeeded">Every task succeeded.</p>' if timeline.tasks else ""
    rows = "".join(
        f"<tr><td>{_e(row.task)}</td><td>{_e(row.outcome)}</td><td>{row.attempts}</td>"
        f"<td>{'' if row.exit_code is None else row.exit_code}</td><td>{_e(row.reason)}</td>"
        f"<td>{_e(row.logs or '')}</td></tr>"
        for row in failed[:MAX_LISTED]
    )
    more = (
        f'<p class="note">and {len(failed) - MAX_LISTED} more.</p>'
        if len(failed) > MAX_LISTED
        else ""
    )
    return (
        f"<h2>Tasks that did not succeed ({len(failed)})</h2>"
        '<table class="failed"><tr><th>task</th><th>outcome</th><th>attempts</th>'
        f"<th>exit</th><th>reason</th><th>logs</th></tr>{rows}</table>{more}"
    )


def _problems(timeline: Timeline) -> str:
    if not timeline.problems:
        return ""
    items = "".join(f"<li>{_e(p)}</li>" for p in timeline.problems[:100])
    return f"<h2>Records that could not be read ({len(timeline.problems)})</h2><ul>{items}</ul>"


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px 24px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.where,.note{color:#666;font-size:12px}
.totals{display:flex;gap:28px;margin:10px 0}.totals div{display:flex;flex-direction:column}
.totals dt{color:#666;font-size:12px}.totals dd{margin:0;font-size:18px;font-weight:600}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:14px;margin:12px 0}
.legend .none{opacity:.4}.sw{display:inline-block;width:12px;height:12px;margin-right:5px;
vertical-align:-1px;border-radius:2px}
table{border-collapse:collapse}td,th{text-align:left;padding:3px 10px 3px 0;vertical-align:top}
.saved th{font-weight:normal;color:#444}.failed td,.failed th{border-bottom:1px solid #eee}
.failed td:nth-child(5),.failed td:nth-child(6){font-size:12px;color:#555;word-break:break-all}
#chart{overflow:auto;max-height:80vh;border:1px solid #ddd}
svg text{font-size:11px;fill:#333}.lane-bg{fill:#fafafa}.lane-bg.odd{fill:#f0f0f0}
.tick{stroke:#ddd}.bar{stroke:none}.bar:hover{stroke:#000;stroke-width:1}
#tip{position:fixed;display:none;background:#fff;border:1px solid #999;padding:6px 8px;
font-size:12px;pointer-events:none;box-shadow:0 2px 6px rgba(0,0,0,.2);white-space:pre}
""" + "".join(
    f".k-{kind}{{fill:{colour};background:{colour}}}" for kind, colour in _COLOURS.items()
)

_SCRIPT = r"""
(function () {
  "use strict";
  var began = performance.now();
  var D = JSON.parse(document.getElementById("data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var chart = document.getElementById("chart");
  var LABEL = 170, PAD = 16, AXIS = 26, ROW = 12, BAR = 10, GAP = 6;
  var width = Math.max(chart.clientWidth || 0, 900);
  var span = Math.max(D.span, 1);
  var scale = (width - LABEL - PAD) / span;
  var top = [], y = AXIS;
  for (var n = 0; n < D.nodes.length; n++) { top.push(y); y += Math.max(D.rows[n], 1) * ROW + GAP; }
  var height = y + 4;
  function el(name, attrs) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  var svg = el("svg", {width: width, height: height, id: "timeline"});
  var steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400];
  var step = 0;
  for (var s = 0; s < steps.length; s++) {
    if (span / 1000 / steps[s] <= 10) { step = steps[s]; break; }
  }
  if (!step) {  // beyond 10 days (a clock far off, say): whole days, never more than 10 ticks
    step = 86400 * Math.ceil(span / 1000 / 86400 / 10);
  }
  function clock(sec) {
    if (step < 60) return sec + " s";
    var h = Math.floor(sec / 3600), m = Math.floor(sec % 3600 / 60);
    return h ? h + " h " + (m < 10 ? "0" : "") + m : m + " min";
  }
  var axis = el("g", {"class": "axis"});
  for (var t = 0; t * 1000 <= span; t += step) {
    var x = LABEL + t * 1000 * scale;
    axis.appendChild(el("line", {"class": "tick", x1: x, x2: x, y1: AXIS - 6, y2: height}));
    var label = el("text", {x: x + 2, y: AXIS - 10});
    label.textContent = clock(t);
    axis.appendChild(label);
  }
  var lanes = [];
  for (n = 0; n < D.nodes.length; n++) {
    var g = el("g", {"class": "lane"});
    g.setAttribute("data-node", D.nodes[n]);
    var h = Math.max(D.rows[n], 1) * ROW;
    g.appendChild(el("rect", {"class": "lane-bg" + (n % 2 ? " odd" : ""), x: 0, y: top[n] - 2,
                              width: width, height: h + 4}));
    var name = el("text", {"class": "node", x: 4, y: top[n] + Math.min(h, ROW) - 2});
    name.textContent = D.nodes[n].length > 26 ? D.nodes[n].slice(0, 25) + "\u2026" : D.nodes[n];
    g.appendChild(name);
    lanes.push(g);
    svg.appendChild(g);
  }
  svg.appendChild(axis);
  var B = D.bars, F = 9;
  for (var i = 0; i < B.length; i += F) {
    var r = el("rect", {
      "class": "bar k-" + D.kinds[B[i + 6]],
      x: (LABEL + B[i + 4] * scale).toFixed(1),
      y: top[B[i + 2]] + B[i + 3] * ROW,
      width: Math.max(B[i + 5] * scale, 2).toFixed(1),
      height: BAR,
      "data-i": i / F
    });
    lanes[B[i + 2]].appendChild(r);
  }
  chart.appendChild(svg);
  var tip = document.getElementById("tip");
  function seconds(ms) { return ms < 60000 ? (ms / 1000).toFixed(1) + " s" : clockLong(ms / 1000); }
  function clockLong(sec) {
    var h = Math.floor(sec / 3600), m = Math.floor(sec % 3600 / 60), s2 = Math.round(sec % 60);
    return (h ? h + " h " : "") + m + " min " + s2 + " s";
  }
  svg.addEventListener("mousemove", function (ev) {
    var k = ev.target.getAttribute("data-i");
    if (k === null) { tip.style.display = "none"; return; }
    var j = k * F, code = B[j + 7];
    var lines = [
      "task " + D.tasks[B[j]] + ", attempt " + B[j + 1],
      D.kinds[B[j + 6]] + (code === null ? "" : ", exit " + code),
      "node " + D.nodes[B[j + 2]],
      "start " + new Date(D.t0 * 1000 + B[j + 4]).toISOString(),
      "duration " + seconds(B[j + 5])
    ];
    var why = D.reasons[B[j + 8]];
    if (why) lines.push(why.length > 200 ? why.slice(0, 199) + "\u2026" : why);
    tip.textContent = lines.join("\n");
    tip.style.display = "block";
    tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - tip.offsetWidth - 4) + "px";
    tip.style.top = (ev.clientY + 14) + "px";
  });
  svg.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  document.body.setAttribute("data-drawn", B.length / F);
  document.body.setAttribute("data-draw-ms", (performance.now() - began).toFixed(1));
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title><style>{css}</style></head>
<body>
{header}
<h2>Attempts on each node</h2>
{legend}
<div id="chart"><noscript>The timeline is drawn by the page's script.</noscript></div>
<div id="tip"></div>
<h2>Work saved</h2>
{saved}
{failures}
{problems}
<p class="note">Colours: an attempt that ended is coloured by its verdict; one stopped by a \
signal is "killed"; one that never wrote its end is "interrupted" (the journal cannot tell \
kill -9 from a lost or preempted node). "met" and "refused" are runs that started no attempt. \
Built from the journal alone by taskkit.</p>
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body></html>
"""
