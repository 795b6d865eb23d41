"""Loads molecule/common/testinfra_plugin.py (fixtures, and which tests run in what order) for
the testinfra suite of every scenario.

Molecule runs pytest with ``-c molecule/pytest.ini``, which makes this folder pytest's rootdir,
so this file loads for every scenario; pytest takes ``pytest_plugins`` from this conftest only.
"""

pytest_plugins = ["testinfra_plugin"]
