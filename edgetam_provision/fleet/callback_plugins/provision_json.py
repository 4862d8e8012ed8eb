"""Ansible stdout callback for `provision push`: every task's per-host result, then the stats, as one
JSON document (the shape of the ansible.posix ``json`` callback, which ansible-core lacks)."""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: provision_json
type: stdout
short_description: one JSON document of task results for provision push
description: every task's per-host result, then the stats, printed once at the end
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "provision_json"

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[dict] = []

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self.tasks.append({"task": {"name": task.get_name()}, "hosts": {}})

    def _record(self, result, **flags) -> None:
        if not self.tasks:
            self.tasks.append({"task": {"name": "connect"}, "hosts": {}})
        self.tasks[-1]["hosts"][result._host.get_name()] = {**result._result, **flags}

    def v2_runner_on_ok(self, result) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats) -> None:
        hosts = sorted(stats.processed.keys())
        summary = {h: stats.summarize(h) for h in hosts}
        self._display.display(json.dumps({"plays": [{"tasks": self.tasks}], "stats": summary}, default=str))
