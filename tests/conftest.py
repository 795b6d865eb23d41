"""Make the collection's Python importable the way Ansible imports it.

The filter plugins import their shared code as
``ansible_collections.webrtc_edge.edge.plugins.plugin_utils.<module>``, so the tests need
a directory holding ``ansible_collections/webrtc_edge/edge`` -> this clone on sys.path.
``ansible_collections`` is a namespace package (the bundled collections in site-packages
are one portion of it), so this directory adds a second portion beside them. The link
lives in the temp dir, one per clone, and is replaced atomically: any checkout, any venv.
"""

import hashlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _collection_root(repo: Path) -> Path:
    tag = hashlib.sha256(str(repo).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"webrtc-edge-collection-{os.getuid()}-{tag}"
    namespace = root / "ansible_collections" / "webrtc_edge"
    namespace.mkdir(parents=True, exist_ok=True)
    link = namespace / "edge"
    if not (link.is_symlink() and link.resolve() == repo):
        staging = namespace / f".edge-{os.getpid()}"
        staging.unlink(missing_ok=True)
        staging.symlink_to(repo, target_is_directory=True)
        os.replace(staging, link)
    return root


sys.path.insert(0, str(_collection_root(REPO)))
