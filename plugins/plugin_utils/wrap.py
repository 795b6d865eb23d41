# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one wrapper every filter goes through: plain functions raise ``ValueError``,
Ansible shows ``AnsibleFilterError`` naming the filter."""

from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError


def wrap_filter(filter_name, func):
    """Call the pure function, turn ValueError/TypeError/KeyError into AnsibleFilterError."""

    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, TypeError, KeyError) as exc:
            raise AnsibleFilterError(f"{filter_name}: {exc}") from exc

    # The function's docstring and signature (inspect follows __wrapped__), the filter's name.
    functools.update_wrapper(wrapper, func)
    wrapper.__name__ = filter_name
    return wrapper
