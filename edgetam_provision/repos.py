"""Which repos: the product's defaults, and a repo as the user names it (``[ORG/]NAME[@REV]``).

What the user typed is checked here, once, against the cache's grammar (`hub.layout`), before
anything connects or reads the cache; `hub/` itself is only the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .hub.layout import valid_repo_id, valid_revision

EDGETAM_REPO = "yonigozlan/EdgeTAM-hf"
BACKBONE_REPO = "timm/repvit_m1.dist_in1k"
DEFAULT_REPOS = (EDGETAM_REPO, BACKBONE_REPO)


@dataclass(frozen=True)
class RepoSpec:
    """A repo id with an optional revision, as typed by the user: ``[ORG/]NAME[@REV]``."""

    repo_id: str
    revision: str | None = None
    repo_type: str = "model"

    @classmethod
    def parse(cls, text: str, revision: str | None = None, repo_type: str = "model") -> RepoSpec:
        """``[ORG/]NAME[@REV]``; `revision` (from --revision) applies when the text names none."""
        repo_id, at, rev = text.partition("@")
        if not valid_repo_id(repo_id):
            raise UsageError(f"not a valid repo id: {text!r}",
                             "use ORG/NAME (or a single NAME such as gpt2), optionally followed by "
                             "@REVISION")
        rev = rev if at else (revision or "")  # --revision: for the repos that name none
        if rev and not valid_revision(rev):
            raise UsageError(f"not a valid revision: {rev!r}", "use a branch, tag or 40-hex commit")
        return cls(repo_id, rev or None, repo_type)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id
