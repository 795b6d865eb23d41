# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the action plugin webrtc_edge.edge.warn (plugins/action/warn.py), which runs
on the controller alone: there is no module code here."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: warn
short_description: Print a warning and change nothing
description:
  - "Prints O(msg) as one of Ansible's own warnings (C([WARNING]: ...)), for the host the task runs on,
    and reports the task as ok."
  - The preflight play uses it on a platform that C(webrtc_edge_allow_untested_platform) lets through.
  - Runs on the controller only and contacts no host.
options:
  msg:
    description:
      - The warning. Leading and trailing white space is dropped; an empty one fails the task.
    type: str
    required: true
attributes:
  check_mode:
    description: Runs in check mode as in a normal run.
    support: full
  diff_mode:
    description: Shows no diff.
    support: none
  platform:
    description: Runs on the controller.
    platforms: all
seealso:
  - module: ansible.builtin.debug
  - module: ansible.builtin.assert
author:
  - webrtc-edge contributors
"""

EXAMPLES = r"""
- name: Warn that this platform is untested
  webrtc_edge.edge.warn:
    msg: "{{ inventory_hostname }} runs {{ ansible_facts['distribution'] }}, which webrtc-edge does not test."
  when: ansible_facts['distribution'] != 'Debian'
"""

RETURN = r"""
msg:
  description: The warning as printed.
  returned: always
  type: str
  sample: app1 runs Ubuntu 24.04 (noble), which webrtc-edge does not test.
"""
