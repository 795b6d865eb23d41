# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""webrtc_edge.edge.warn: print a message as one of Ansible's own warnings and change nothing.

Runs on the controller only (no connection, no module), in check mode too. Its documentation
is plugins/modules/warn.py, where ansible-doc looks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    """Hand msg to Display.warning: Ansible prints it as `[WARNING]: ...` and counts it in the task's result."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    # The options of plugins/modules/warn.py (tests/plugins/action/test_warn.py holds them together).
    ARGUMENT_SPEC: ClassVar[dict[str, dict[str, Any]]] = {"msg": {"type": "str", "required": True}}

    def run(self, tmp=None, task_vars=None):
        _, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        msg = args["msg"].strip()
        if not msg:
            raise AnsibleActionFail("webrtc_edge.edge.warn: msg is empty")
        display.warning(msg)
        result.update(changed=False, msg=msg)
        return result
