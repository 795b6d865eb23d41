"""webrtc-edge signaling server: WebSocket and HTTP long-polling signaling for WebRTC."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("signaling")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
