"""The network shell: HTTP and WebSockets on one port (aiohttp), over a protocol-neutral session driver.

Layers, data flowing one way: `http` (routes, guards) and `connection` (one WebSocket's I/O and
deadlines) feed a wire codec (`protocol_v1`) whose Commands drive a `driver.SessionDriver`; the
driver feeds the shared `Batcher` and answers with `wire` events the codec renders. `app` owns the
lifecycle, `admission` the capacity, `settings` the flags.
"""

from .app import AsrServer, ServerContext
from .run import run_until_signal, serve_from_args
from .settings import ServerSettings, add_server_args, settings_from_args

__all__ = [
    "AsrServer",
    "ServerContext",
    "ServerSettings",
    "add_server_args",
    "run_until_signal",
    "serve_from_args",
    "settings_from_args",
]
