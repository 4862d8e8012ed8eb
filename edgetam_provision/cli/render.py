"""Human renderings of each command's result (the JSON object is the result itself)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ..console import counted, human_size
from ..hub.manifest import HubCheck


def backup(d: dict[str, Any]) -> str:
    return "\n".join(f"{b['status']:>18}  {b['archive']}  {b['repo_id']}@{b['commit'][:12]}  "
                     f"{human_size(b['size'])}  sha256 {b['sha256'][:16]}…" for b in d["backups"])


def _action(x: dict[str, Any]) -> str:
    extra = ""
    if x["kind"] == "ref":
        extra = f"  {x.get('previous', '')[:12]} → {x['commit'][:12]}" if x.get("previous") else \
            f"  {x['commit'][:12]}"
    return f"{'':>17}{x['state']:>7} {x['kind']:<5} {x['path']}{extra}"


def restore_plan(d: dict[str, Any]) -> str:
    lines = []
    for a in d["archives"]:
        repos = ", ".join(f"{r['repo_id']}@{','.join(c[:12] for c in r['commits'])}" for r in a["repos"])
        repaired = f", {a['repaired_blobs']} repaired" if a["repaired_blobs"] else ""
        status = "intact" if d.get("check_only") else a["status"]
        blobs = counted(a["new_blobs"], "blob" if d.get("check_only") else "new blob")  # a check: no cache
        lines.append(f"{status:>15}  {Path(a['archive']).name}  {repos}  "
                     f"({blobs}{repaired}, {human_size(a['new_bytes'])}; "
                     f"every byte checked, archive by {a['checked_by']})")
        for r in a["moved_refs"]:
            verb = "kept" if r["state"] == "kept" else "moved"
            lines.append(f"{'':>17}{r['repo_id']} {r['path']} {verb}: " + (
                f"{r['previous'][:12]} (the backup has another commit; --keep-refs)" if verb == "kept"
                else f"{r['previous'][:12]} → {r['commit'][:12]}"))
        if a["skipped"]:
            lines.append(f"{'':>17}skipped {counted(len(a['skipped']), 'member')} not part of a revision "
                         f"(.locks/, CACHEDIR.TAG, .no_exist/, *.incomplete), e.g. {a['skipped'][0]}")
        if d.get("dry_run") and not d.get("check_only"):  # what a restore would write into the cache
            lines.extend(_action(x) for x in a["actions"])
    if d.get("check_only"):
        lines.append(f"checked {counted(len(d['archives']), 'backup file')}: every member and every byte "
                     "is intact (no cache involved)")
        word = "the backup's word"
        lines += [f"{Path(h['archive']).name}: {HubCheck.from_dict(h).describe(word)}"
                  for h in d.get("hub", [])]
    else:
        verb = "would write" if d.get("dry_run") else "wrote"
        lines.append(f"{verb} {counted(d['writes'], 'entry', 'entries')} into {d['cache']}")
    return "\n".join(lines)


def status(d: dict[str, Any]) -> str:
    lines = [f"backups in {d['backups_folder']}:"]
    lines += ([f"  {b['archive']}  {human_size(b['size'])}  {b['state']}" for b in d["backups"]]
              or ["  (none: it holds no archive)" if d.get("backups_folder_found") else
                  "  (none: no such folder)"])
    lines.append(f"cache {d['cache']}:")
    for r in d["revisions"]:
        refs = f" ({', '.join(r['refs'])})" if r["refs"] else ""
        partial = ", partial: the files of a filtered fetch (--include/--exclude), not the whole revision" \
            if r.get("partial") else ""
        lines.append(f"  {r['repo_id']}@{r['commit'][:12]}{refs}  {counted(r['files'], 'file')}  "
                     f"{human_size(r['size'])}  {r['integrity']}{partial}")
        lines += [f"      problem: {p}" for p in r["problems"]]
        if r["problems"]:
            lines.append("      fix: `provision restore` a backup of it (damaged blobs are repaired), "
                         "or fetch it again")
    if not d["revisions"]:
        lines.append("  (no model repos)")
    if d.get("mirror"):
        lines.append(f"mirror running on {d['mirror']['url']} (pid {d['mirror']['pid']}), serving: "
                     + ", ".join(f"{r['repo_id']}@{','.join(c[:12] for c in r['commits'])}"
                                 for r in d["mirror"]["repos"]))
    return "\n".join(lines)


def fetch(d: dict[str, Any]) -> str:
    def line(a: dict[str, Any]) -> str:
        resumed = a["resumed_from"] and not a["already_here"]
        return (f"{'already here' if a['already_here'] else 'fetched':>12}  {Path(a['archive']).name}  "
                f"{a['repo_id']}@{a['commit'][:12]}  {human_size(a['size'])}  sha256 {a['sha256'][:16]}…"
                + (f"  (resumed at {human_size(a['resumed_from'])})" if resumed else "")
                + (f"\n{'':>14}{HubCheck.from_dict(a['hub']).describe()}" if a.get("hub") else ""))

    lines = [line(a) for a in d["archives"]]
    lines.append(f"{human_size(d['bytes'])} in {d['seconds']:.1f} s"
                 + (f" ({d['mb_per_s']} MB/s, from the start of the fetch to its end)" if d["bytes"] else ""))
    if "restore" in d:
        lines.append(restore_plan(d["restore"]))
    if "verify" in d:
        lines.append(verify({"report": d["verify"]}))
    from ..repos import EDGETAM_REPO

    out = shlex.quote(d["out"])
    if "restore" in d:  # restored (and EdgeTAM verified) already: the archives serve other machines
        lines.append(f"archives kept in {d['out']} (for another machine: provision restore {out})")
    else:
        then = ", then provision verify" if any(a["repo_id"] == EDGETAM_REPO for a in d["archives"]) else ""
        lines.append(f"archives in {d['out']}; next: provision restore {out}{then}")
    return "\n".join(lines)


def _scores(values: list[float] | None, best: int | None = None) -> str:
    if values is None:
        return "n/a"
    return " ".join(f"{x:.3f}{'*' if k == best else ' '}" for k, x in enumerate(values))


def verify(d: dict[str, Any]) -> str:
    r = d["report"]
    v = r["versions"]
    ref = r.get("reference")
    n = len(r["cases"])
    load_ref = f" (reference {ref['load_ms'] / 1000:.2f} s)" if ref else ""
    lines = [f"EdgeTAM verify: {'PASSED' if r['passed'] else 'FAILED'} on {r['device']}"
             + ("  (self-test, random weights)" if r["synthetic"] else ""),
             f"  model     {r['repo_id']}@{r['commit'][:12]}  ({r['parameters'] / 1e6:.2f}M parameters)",
             f"  versions  torch {v['torch']}, transformers {v['transformers']}, timm {v['timm']}, "
             f"huggingface_hub {v['huggingface_hub']}",
             f"  image     {Path(r['image']).name}, prompts {r['prompts']}",
             f"  timing    load {r['load_s']:.2f} s{load_ref}, "
             f"first inference {r['first_inference_s']:.2f} s, "
             f"image encode {r['encode_ms']:.1f} ms; {counted(n, 'case')} warm "
             f"{r['four_cases_warm_ms']:.1f} ms",
             f"  {'case':<14}{'warm':>10}{'ref. 1 call':>13}  {'IoU scores (chosen *)':<24}"
             f"{'reference scores':<22}{'area':>9}{'gt IoU':>14}"]
    for c in r["cases"]:
        rc = (ref or {}).get("cases", {}).get(c["name"], {})
        for i, o in enumerate(c["objects"]):
            ref_scores = (rc.get("iou_scores") or [None] * (i + 1))[i] if rc else None
            gt = f"{o['gt_iou']:.3f}/{o['gt_iou_best']:.3f}" if "gt_iou" in o else "-"
            name, warm, ref_ms = (c["name"], f"{c['latency_ms']:.1f} ms",
                                  f"{rc['ms']} ms" if rc else "") if i == 0 else ("", "", "")
            lines.append(f"  {name:<14}{warm:>10}{ref_ms:>13}  {_scores(o['iou_scores'], o['best']):<24}"
                         f"{_scores(ref_scores) if rc else '-':<22}{o['area']:>9}{gt:>14}")
    timed = [c for c in r["cases"] if (ref or {}).get("cases", {}).get(c["name"], {}).get("ms") is not None]
    if timed:  # not alike: the reference run timed one call of each case, its first one cold
        first = ref["cases"][timed[0]["name"]]["ms"]
        lines.append(f"  ref. time one call per case in the reference run, in this order: its first "
                     f"({first} ms) was cold; warm: a median of warm runs here")
    gate = r["quality_gate"]
    if gate["applied"] and gate["yardstick"] == "reference":
        rule = f"scores within {gate['tolerance']} of the reference run; masks where the prompts are"
    elif gate["applied"]:
        rule = f"best of three masks overlaps ground truth >= {gate['min_iou']} (chosen/best shown)"
    else:
        rule = f"not applied: {gate['why_not']}"
    lines.append(f"  quality   {rule}")
    if ref:
        lines.append(f"  reference {ref['source']}")
    if r["cases"] and r["cases"][0].get("overlay"):
        lines.append(f"  overlays  {Path(r['cases'][0]['overlay']).parent}/")
    lines += [f"  FAILED    {f}" for f in r["failures"]]
    if d.get("note"):
        lines.append(f"  note      {d['note']}")
    return "\n".join(lines)


def push(d: dict[str, Any]) -> str:
    head = (f"{'host':<22}{'repos':<34}{'copied':<8}{'restore':<18}{'verify':<8}{'4 cases':>10}  "
            f"{'device':<7}error")
    lines = [head]
    for r in d["hosts"]:
        verify = "-" if r["verify"] is None else "PASSED" if r["verify"] else "FAILED"
        ms = f"{r['four_cases_ms']:.1f} ms" if r["four_cases_ms"] else "-"
        lines.append(f"{r['host'][:21]:<22}{', '.join(r['repos'])[:33] or '-':<34}"
                     f"{('would' if d['check'] else 'yes') if r['copied'] else 'no':<8}"
                     f"{', '.join(r['restore'])[:17] or '-':<18}{verify:<8}{ms:>10}  {r['device'] or '-':<7}"
                     f"{r['error']}")
    ok = sum(r["passed"] for r in d["hosts"])
    lines.append(f"{ok} of {len(d['hosts'])} hosts passed" + (" (check mode: nothing was written)"
                                                              if d["check"] else ""))
    if d.get("p2p"):  # which path each host's archives took, and from whom the bytes came
        lines += ["", f"{'host':<22}{'from here':>11}{'from peers':>12}  path"]
        lines += [f"{r['host'][:21]:<22}{human_size(r['from_controller'] or 0):>11}"
                  f"{human_size(r['from_peers'] or 0):>12}  {r['path']}" for r in d["hosts"]]
        p = d["p2p"]
        lines.append(f"this machine sent {human_size(p['controller_uploaded'])} peer to peer for "
                     f"{human_size(p['archive_bytes'])} of archives")
    return "\n".join(lines)


def serve_ready(d: dict[str, Any]) -> str:
    """What `provision serve` says once it listens: where, and who can reach it."""
    if d["loopback_only"]:
        return (f"mirror on {d['url']}, reachable from this machine only (HF_ENDPOINT={d['url']} here) "
                "— Ctrl-C stops it\n"
                "to offer it to the LAN: --host 0.0.0.0 (every interface) or --host <this machine's "
                "address>; anyone who can reach the port can then read everything it serves")
    return (f"mirror on {d['url']}: HF_ENDPOINT={d['url']} on the other machines"
            + (f" (or {', '.join(d['urls'][1:])})" if d["urls"][1:] else "") + " — Ctrl-C stops it")


def serve(d: dict[str, Any]) -> str:
    how = " (Ctrl-C)" if d.get("stopped_by") == "SIGINT" else ""
    lines = [f"mirror on {d['url']} stopped{how} after {d['requests']} requests "
             f"({human_size(d['bytes_sent'])} sent); it served:"]
    lines += [f"  {r['repo_type']} {r['repo_id']}@{', '.join(c[:12] for c in r['commits']) or '-'}"
              + (f"  (NOT served, damaged: {', '.join(r['damaged'].values())})" if r["damaged"] else "")
              for r in d["repos"]]
    return "\n".join(lines)


def doctor(report: dict[str, Any]) -> str:
    lines = []
    for c in report["checks"]:
        lines.append(f"{c['status']:>4}  {c['name']}: {c['detail']}")
        if c["fix"] and c["status"] != "ok":
            lines.append(f"      fix: {c['fix']}")
    s = report["summary"]
    lines.append(f"{s['ok']} ok, {counted(s['warn'], 'warning')}, {counted(s['fail'], 'failure')}")
    sent = any(c["name"].startswith("credentials") and c["status"] != "ok" for c in report["checks"])
    if sent and not any(c["name"].startswith("online") for c in report["checks"]):
        lines.append("credentials are sent that were not tested: `provision doctor --online` says whether "
                     "the Hub rejects them (and `--fix` puts aside the rejected ones kept in files)")
    return "\n".join(lines)


def fixed(d: dict[str, Any]) -> str:
    if d.get("message_ok"):
        return str(d["message_ok"]) + (f" (kept: {', '.join(d['kept'])})" if d.get("kept") else "")
    if d.get("declined"):
        return "nothing was changed"
    lines = [f"changed: {c['what']} (backup {c['backup']})" for c in d["changes"]]
    lines += [f"kept (accepted or not sent): {k}" for k in d.get("kept", [])]
    if d.get("unset"):
        where = f" (set in {', '.join(d['shell_lines'])})" if d.get("shell_lines") else ""
        lines.append(f"run now, in your shell: {'; '.join(d['unset'])}{where}")
        lines.append(f"after that, a plain download gets {d['after']} from {d['endpoint']}; in this shell "
                     f"now it gets {d['now'] or 'no answer'}")
    else:
        lines.append(f"a plain download now gets {d['after']} from {d['endpoint']}")
    if d["backups"]:
        lines.append(f"undo: provision doctor --undo {' '.join(d['backups'])}")
    return "\n".join(lines)


def undone(d: dict[str, Any]) -> str:
    return "\n".join(f"{r['outcome']}: {r['path']}" + (f" ({r['note']})" if r["note"] else "")
                     for r in d["restored"])
