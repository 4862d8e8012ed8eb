"""Human renderings of each command's result (the JSON object is the result itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .output import human_size


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
        lines.append(f"{a['status']:>15}  {Path(a['archive']).name}  {repos}  "
                     f"({a['new_blobs']} new blobs{repaired}, {human_size(a['new_bytes'])}; "
                     f"every byte checked, archive by {a['checked_by']})")
        for r in a["moved_refs"]:
            verb = "kept" if r["state"] == "kept" else "moved"
            lines.append(f"{'':>17}{r['repo_id']} {r['path']} {verb}: " + (
                f"{r['previous'][:12]} (the backup has another commit; --keep-refs)" if verb == "kept"
                else f"{r['previous'][:12]} → {r['commit'][:12]}"))
        if a["skipped"]:
            lines.append(f"{'':>17}skipped {len(a['skipped'])} members that are not part of a revision "
                         f"(.locks/, CACHEDIR.TAG, .no_exist/, *.incomplete), e.g. {a['skipped'][0]}")
        if d.get("dry_run"):
            lines.extend(_action(x) for x in a["actions"])
    if d.get("check_only"):
        lines.append(f"checked {len(d['archives'])} backup files: every member and every byte is intact")
    else:
        lines.append(("would write" if d.get("dry_run") else "wrote") + f" {d['writes']} entries into "
                     f"{d['cache']}")
    return "\n".join(lines)


def status(d: dict[str, Any]) -> str:
    lines = [f"backups in {d['backups_folder']}:"]
    lines += ([f"  {b['archive']}  {human_size(b['size'])}  {b['state']}" for b in d["backups"]]
              or ["  (none)"])
    lines.append(f"cache {d['cache']}:")
    for r in d["revisions"]:
        refs = f" ({', '.join(r['refs'])})" if r["refs"] else ""
        lines.append(f"  {r['repo_id']}@{r['commit'][:12]}{refs}  {r['files']} files  "
                     f"{human_size(r['size'])}  {r['integrity']}")
        lines += [f"      problem: {p}" for p in r["problems"]]
        if r["problems"]:
            lines.append("      fix: `provision restore` a backup of it (damaged blobs are repaired), "
                         "or fetch it again")
    if not d["revisions"]:
        lines.append("  (no model repos)")
    return "\n".join(lines)


def fetch(d: dict[str, Any]) -> str:
    lines = [f"fetched  {Path(a['archive']).name}  {a['repo_id']}@{a['commit'][:12]}  "
             f"{human_size(a['size'])}  sha256 {a['sha256'][:16]}…  {a['mb_per_s']} MB/s"
             + (f"  (resumed at {a['resumed_from']})" if a["resumed_from"] else "")
             for a in d["archives"]]
    if "restore" in d:
        lines.append(restore_plan(d["restore"]))
    if "verify" in d:
        lines.append(verify({"report": d["verify"]}))
    return "\n".join(lines)


def verify(d: dict[str, Any]) -> str:
    r = d["report"]
    v = r["versions"]
    lines = [f"EdgeTAM verify: {'PASSED' if r['passed'] else 'FAILED'} on {r['device']}"
             + ("  (self-test, random weights)" if r["synthetic"] else ""),
             f"  model     {r['repo_id']}@{r['commit'][:12]}  ({r['parameters'] / 1e6:.2f}M parameters)",
             f"  versions  torch {v['torch']}, transformers {v['transformers']}, timm {v['timm']}, "
             f"huggingface_hub {v['huggingface_hub']}",
             f"  timing    load {r['load_s']:.2f} s, first inference {r['first_inference_s']:.2f} s, "
             f"image encode {r['encode_ms']:.1f} ms; four cases warm {r['four_cases_warm_ms']:.1f} ms",
             f"  {'case':<14}{'warm':>10}  {'IoU scores (best *)':<24}{'area':>10}{'gt IoU':>9}"]
    for c in r["cases"]:
        for i, o in enumerate(c["objects"]):
            scores = " ".join(f"{x:.2f}{'*' if k == o['best'] else ' '}"
                              for k, x in enumerate(o["iou_scores"]))
            gt = f"{o['gt_iou']:.3f}" if "gt_iou" in o else "-"
            name = c["name"] if i == 0 else ""
            lat = f"{c['latency_ms']:.1f} ms" if i == 0 else ""
            lines.append(f"  {name:<14}{lat:>10}  {scores:<24}{o['area']:>10}{gt:>9}")
    gate = r["quality_gate"]
    rule = f"IoU >= {gate['min_iou']}" if gate["applied"] else f"not applied: {gate['why_not']}"
    lines.append(f"  quality   {rule}")
    if r["cases"] and r["cases"][0].get("overlay"):
        lines.append(f"  overlays  {Path(r['cases'][0]['overlay']).parent}/")
    lines += [f"  FAILED    {f}" for f in r["failures"]]
    if d.get("note"):
        lines.append(f"  note      {d['note']}")
    return "\n".join(lines)
