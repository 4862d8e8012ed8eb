"""Restore and verify on a fleet through Ansible: push (the driver), push.yml, callback_plugins/."""
