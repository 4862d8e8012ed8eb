"""Human renderings of each command's typed result (its JSON object is the result's ``to_dict``)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..console import counted, human_size
from ..errors import Result
from ..hub.manifest import HubCheck

if TYPE_CHECKING:  # the results' modules load with their commands, not with `provision --help`
    from ..backup import BackupReport
    from ..doctor.checks import DoctorReport
    from ..doctor.fix import FixReport, UndoReport
    from ..fleet.push import PushResult
    from ..pipeline import FetchResult
    from ..restore.plan import Action, RestorePlan
    from ..serve.run import Listening, Served
    from ..status import StatusReport
    from ..verify.report import VerifyReport

R = TypeVar("R")


def _when(kind: type[R], words: Callable[[R], str], result: Result) -> str:
    """The words for a failure's result when it is of `kind` (else none)."""
    return words(result) if isinstance(result, kind) else ""


def backup(report: BackupReport) -> str:
    return "\n".join(f"{b.status:>18}  {b.archive}  {b.entry.repo_id}@{b.entry.commit[:12]}  "
                     f"{human_size(b.entry.size)}  sha256 {b.entry.sha256[:16]}…" for b in report.backups)


def _action(x: Action) -> str:
    extra = ""
    if x.kind == "ref":
        commit = (x.commit or "")[:12]
        extra = f"  {x.previous[:12]} → {commit}" if x.previous else f"  {commit}"
    return f"{'':>17}{x.state:>7} {x.kind:<5} {x.path}{extra}"


def restore_plan(plan: RestorePlan, dry_run: bool = False, check_only: bool = False,
                 hub: Sequence[tuple[Path, HubCheck]] = ()) -> str:
    """A restore's plan (`dry_run`: what it would do), or a check's verdict on the backups
    (`check_only`, with the Hub's word on each archive checked there)."""
    from ..hub.layout import repo_id_from_folder

    lines = []
    for a in plan.archives:
        repos = ", ".join(f"{repo_id_from_folder(f)}@{','.join(c[:12] for c in commits)}"
                          for f, commits in a.commits.items())
        repaired = sum(b.state == "repair" for b in a.blobs)
        repaired_text = f", {repaired} repaired" if repaired else ""
        status = "intact" if check_only else a.status(written=not dry_run)
        new = sum(b.state == "new" for b in a.blobs)
        blobs = counted(new, "blob" if check_only else "new blob")  # a check: no cache
        lines.append(f"{status:>15}  {a.archive.name}  {repos}  "
                     f"({blobs}{repaired_text}, {human_size(sum(b.size for b in a.blobs))}; "
                     f"every byte checked, archive by {a.checked_by})")
        for r in a.moved_refs:
            kept = r.state == "kept"
            lines.append(f"{'':>17}{repo_id_from_folder(r.folder)} {r.path} {'kept' if kept else 'moved'}: "
                         + (f"{(r.previous or '')[:12]} (the backup has another commit; --keep-refs)" if kept
                            else f"{(r.previous or '')[:12]} → {(r.commit or '')[:12]}"))
        skipped = [*a.skipped, *a.unused]
        if skipped:
            lines.append(f"{'':>17}skipped {counted(len(skipped), 'member')} not part of a revision "
                         f"(.locks/, CACHEDIR.TAG, .no_exist/, *.incomplete), e.g. {skipped[0]}")
        if dry_run and not check_only:  # what a restore would write into the cache
            lines.extend(_action(x) for x in a.writes)
    if check_only:
        lines.append(f"checked {counted(len(plan.archives), 'backup file')}: every member and every byte "
                     "is intact (no cache involved)")
        word = "the backup's word"
        lines += [f"{archive.name}: {check.describe(word)}" for archive, check in hub]
    else:
        verb = "would write" if dry_run else "wrote"
        lines.append(f"{verb} {counted(len(plan.writes), 'entry', 'entries')} into {plan.cache}")
    return "\n".join(lines)


def status(report: StatusReport) -> str:
    lines = [f"backups in {report.backups_folder}:"]
    lines += ([f"  {b.archive}  {human_size(b.size)}  {b.state}" for b in report.backups]
              or ["  (none: it holds no archive)" if report.backups_folder_found else
                  "  (none: no such folder)"])
    lines.append(f"cache {report.cache.cache}:")
    for r in report.cache.revisions:
        s = r.state
        refs = f" ({', '.join(s.refs)})" if s.refs else ""
        partial = ", partial: the files of a filtered fetch (--include/--exclude), not the whole revision" \
            if r.partial else ""
        lines.append(f"  {s.repo_id}@{s.commit[:12]}{refs}  {counted(len(s.files), 'file')}  "
                     f"{human_size(s.size)}  {r.integrity}{partial}")
        lines += [f"      problem: {p}" for p in s.problems]
        if s.problems:
            lines.append("      fix: `provision restore` a backup of it (damaged blobs are repaired), "
                         "or fetch it again")
    if not report.cache.revisions:
        lines.append("  (no model repos)")
    mirror = report.mirror  # the JSON of the running mirror's state file
    if mirror:
        lines.append(f"mirror running on {mirror['url']} (pid {mirror['pid']}), serving: "
                     + ", ".join(f"{r['repo_id']}@{','.join(c[:12] for c in r['commits'])}"
                                 for r in mirror["repos"]))
    return "\n".join(lines)


def fetch(result: FetchResult) -> str:
    lines = []
    for p in result.pulled:
        e = p.entry
        resumed = p.resumed_from and not p.already_here
        lines.append(f"{'already here' if p.already_here else 'fetched':>12}  {p.archive.name}  "
                     f"{e.repo_id}@{e.commit[:12]}  {human_size(e.size)}  sha256 {e.sha256[:16]}…"
                     + (f"  (resumed at {human_size(p.resumed_from)})" if resumed else "")
                     + (f"\n{'':>14}{e.hub.describe()}" if e.hub else ""))
    fetched = result.fetched_bytes
    lines.append(f"{human_size(fetched)} in {round(result.seconds, 3):.1f} s"
                 + (f" ({result.mb_per_s} MB/s, from the start of the fetch to its end)" if fetched else ""))
    if result.restored is not None:
        lines.append(restore_plan(result.restored))
    if result.verified is not None:
        lines.append(verify(replace(result.verified, note="")))
    from ..repos import EDGETAM_REPO

    out = shlex.quote(str(result.out))
    if result.restored is not None:  # restored (and EdgeTAM verified) already: the archives serve others
        lines.append(f"archives kept in {result.out} (for another machine: provision restore {out})")
    else:
        edgetam = any(p.entry.repo_id == EDGETAM_REPO for p in result.pulled)
        then = ", then provision verify" if edgetam else ""
        lines.append(f"archives in {result.out}; next: provision restore {out}{then}")
    return "\n".join(lines)


def failed_fetch(result: Result) -> str:
    from ..pipeline import FetchResult

    return _when(FetchResult, fetch, result)


def _scores(values: list[float] | None, best: int | None = None) -> str:
    if values is None:
        return "n/a"
    return " ".join(f"{x:.3f}{'*' if k == best else ' '}" for k, x in enumerate(values))


def verify(report: VerifyReport) -> str:
    r = report.to_json()  # what the worker measured is JSON (it crossed a process); so is the report
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
        first = (ref or {})["cases"][timed[0]["name"]]["ms"]
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
    if report.note:
        lines.append(f"  note      {report.note}")
    return "\n".join(lines)


def failed_verify(result: Result) -> str:
    from ..verify.report import VerifyReport

    return _when(VerifyReport, verify, result)


def push(result: PushResult) -> str:
    head = (f"{'host':<22}{'repos':<34}{'copied':<8}{'restore':<18}{'verify':<8}{'4 cases':>10}  "
            f"{'device':<7}error")
    lines = [head]
    for r in result.hosts:
        verify = "-" if r.verify is None else "PASSED" if r.verify else "FAILED"
        ms = f"{r.four_cases_ms:.1f} ms" if r.four_cases_ms else "-"
        lines.append(f"{r.host[:21]:<22}{', '.join(r.repos)[:33] or '-':<34}"
                     f"{('would' if result.check else 'yes') if r.copied else 'no':<8}"
                     f"{', '.join(r.restore)[:17] or '-':<18}{verify:<8}{ms:>10}  {r.device or '-':<7}"
                     f"{r.error}")
    ok = sum(r.passed for r in result.hosts)
    lines.append(f"{ok} of {len(result.hosts)} hosts passed" + (" (check mode: nothing was written)"
                                                                if result.check else ""))
    if result.p2p:  # which path each host's archives took, and from whom the bytes came
        lines += ["", f"{'host':<22}{'from here':>11}{'from peers':>12}  path"]
        lines += [f"{r.host[:21]:<22}{human_size(r.from_controller or 0):>11}"
                  f"{human_size(r.from_peers or 0):>12}  {r.path}" for r in result.hosts]
        p = result.p2p
        lines.append(f"this machine sent {human_size(p['controller_uploaded'])} peer to peer for "
                     f"{human_size(p['archive_bytes'])} of archives")
    return "\n".join(lines)


def failed_push(result: Result) -> str:
    from ..fleet.push import PushResult

    return _when(PushResult, push, result)


def serve_ready(start: Listening) -> str:
    """What `provision serve` says once it listens: where, and who can reach it."""
    if start.loopback_only:
        return (f"mirror on {start.url}, reachable from this machine only (HF_ENDPOINT={start.url} here) "
                "— Ctrl-C stops it\n"
                "to offer it to the LAN: --host 0.0.0.0 (every interface) or --host <this machine's "
                "address>; anyone who can reach the port can then read everything it serves")
    return (f"mirror on {start.url}: HF_ENDPOINT={start.url} on the other machines"
            + (f" (or {', '.join(start.urls[1:])})" if start.urls[1:] else "") + " — Ctrl-C stops it")


def serve(served: Served) -> str:
    how = " (Ctrl-C)" if served.stopped_by == "SIGINT" else ""
    lines = [f"mirror on {served.url} stopped{how} after {served.requests} requests "
             f"({human_size(served.bytes_sent)} sent); it served:"]
    lines += [f"  {r['repo_type']} {r['repo_id']}@{', '.join(c[:12] for c in r['commits']) or '-'}"
              + (f"  (NOT served, damaged: {', '.join(r['damaged'].values())})" if r["damaged"] else "")
              for r in served.repos]  # the index's summary, as JSON
    return "\n".join(lines)


def doctor(report: DoctorReport) -> str:
    lines = []
    for c in report.checks:
        lines.append(f"{c.status:>4}  {c.name}: {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"      fix: {c.fix}")
    s = report.summary
    lines.append(f"{s['ok']} ok, {counted(s['warn'], 'warning')}, {counted(s['fail'], 'failure')}")
    sent = any(c.name.startswith("credentials") and c.status != "ok" for c in report.checks)
    if sent and not any(c.name.startswith("online") for c in report.checks):
        lines.append("credentials are sent that were not tested: `provision doctor --online` says whether "
                     "the Hub rejects them (and `--fix` puts aside the rejected ones kept in files)")
    return "\n".join(lines)


def fixed(report: FixReport) -> str:
    if report.message_ok:
        return report.message_ok + (f" (kept: {', '.join(report.kept)})" if report.kept else "")
    if report.declined:
        return "nothing was changed"
    lines = [f"changed: {c.what} (backup {c.backup})" for c in report.changes]
    lines += [f"kept (accepted or not sent): {k}" for k in report.kept]
    if report.unset:
        where = f" (set in {', '.join(report.shell_lines)})" if report.shell_lines else ""
        lines.append(f"run now, in your shell: {'; '.join(report.unset)}{where}")
        lines.append(f"after that, a plain download gets {report.after} from {report.endpoint}; in this "
                     f"shell now it gets {report.now or 'no answer'}")
    else:
        lines.append(f"a plain download now gets {report.after} from {report.endpoint}")
    if report.backups:
        lines.append(f"undo: provision doctor --undo {' '.join(report.backups)}")
    return "\n".join(lines)


def failed_fix(result: Result) -> str:
    from ..doctor.fix import FixReport

    return _when(FixReport, fixed, result)


def undone(report: UndoReport) -> str:
    return "\n".join(f"{u.outcome}: {u.path}" + (f" ({u.note})" if u.note else "") for u in report.restored)
