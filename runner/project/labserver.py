"""``python -m runner.project.labserver [OPTIONS]``: JupyterLab as ``runner lab`` starts it.

This is ``jupyter lab`` with one change: SIGINT stops the server at once, as SIGTERM does, with or without a
terminal. Jupyter Server asks "Shut down this Jupyter server (y/[n])?" on a terminal, and without one lets
SIGINT raise KeyboardInterrupt out of its event loop, skipping its shutdown (a thread left running can then keep
the process alive). JupyterHub maps SIGINT to the same stop for the same reason.
"""

from __future__ import annotations

import signal


def main() -> None:
    from jupyter_server.serverapp import ServerApp
    from jupyterlab.labapp import LabApp

    class Server(ServerApp):  # reads the ServerApp section of the config like the original
        def init_signal(self) -> None:
            super().init_signal()
            signal.signal(signal.SIGINT, self._signal_stop)

    LabApp.serverapp_class = Server  # in this process only
    LabApp.launch_instance()


if __name__ == "__main__":
    main()
