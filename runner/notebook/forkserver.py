"""Kernels forked from a process that imported their libraries once.

A kernel's start costs its imports: ipykernel and IPython, then what the notebook uses (pandas, scikit-learn,
MLflow: 7 to 10 s of CPU on this project's 2-core machine), and a pipeline starts one kernel per step. A fork
server (a *zygote*, as in Android and in Spark's Python workers) pays them once: a process the runner starts
(:class:`ForkServer`) imports ipykernel and ``defaults.preload``, then forks whenever a step process asks over a
Unix socket; the child becomes the kernel with those modules already in memory, shared copy-on-write.

The child is the kernel jupyter_client would have started: the same command line (``python -m ipykernel_launcher
-f <connection file>``), environment, working folder and output files (passed over the socket), in a session of
its own. :func:`use_forked_kernels` gives a kernel manager the jupyter_client provisioner that asks for it; that
starts the kernel the usual way when there is no server, it cannot be reached, or the kernelspec runs another
interpreter.

A forked kernel is not a child of the step process that asked for it, so walking that process's children does
not find it: the step process adds the pids it was given (:func:`forked_pids`), and the kernel watches its step
process and SIGKILLs its own process group as soon as that process is gone, as a step process does with its
kernel when the runner dies: a killed step must not commit. The server watches the process that started it and
exits with it; kernels it forked run on until their steps end.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOCKET_ENV = "RUNNER_KERNEL_FORKSERVER"  # in a step process's environment: the server's socket
MODULES_ENV = "RUNNER_FORKSERVER_MODULES"  # in the server's: JSON list of the modules it imports first
OWNER_ENV = "RUNNER_FORKSERVER_OWNER"  # in the server's: the pid it lives and dies with
REPLY_TIMEOUT = 300.0  # seconds a step process waits for its kernel's pid (the server may still be importing)
POLL_SECONDS = 0.5  # how often the server and its kernels look for their owner, where a pidfd is not to be had
_HEADER = struct.Struct("!Q")  # a request: its length, with the kernel's stdout and stderr attached, then JSON
_LAUNCHER = ("-m", "ipykernel_launcher")
# Blanks at the end of the server's command line: the room a kernel's own command line takes there (setproctitle)
_TITLE_ROOM = 256
_forked: dict[int, _Forked] = {}  # the kernels this process had forked, by pid


class ForkServer:
    """The fork server of one runner process (or worker): started at once, importing while steps get ready.

    ``env`` goes into the environment of the step processes that should use it; :meth:`close` ends it (kernels
    it forked run on). Its own output (a preload that failed to import) goes to ``log``.
    """

    def __init__(self, modules: tuple[str, ...], log: str | Path):
        import subprocess

        self._folder = tempfile.mkdtemp(prefix="runner-kernels-")  # 0700: only this user may ask it to fork
        self.socket = os.path.join(self._folder, "socket")
        # Listening before the server starts: step processes may connect (and wait) while it imports
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket)
        listener.listen(64)
        env = {**os.environ, MODULES_ENV: json.dumps(list(modules)), OWNER_ENV: str(os.getpid())}
        try:
            with open(log, "ab") as stderr:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(listener.fileno()), self.socket, " " * _TITLE_ROOM],
                    env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, pass_fds=[listener.fileno()],
                    start_new_session=True)  # Ctrl-C on the runner is not for it
        finally:
            listener.close()

    @property
    def env(self) -> dict[str, str]:
        return {SOCKET_ENV: self.socket}

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()  # it holds nothing but imported modules
        self._proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.socket)
        with contextlib.suppress(OSError):
            os.rmdir(self._folder)


def use_forked_kernels(manager: Any) -> None:
    """Have jupyter_client's kernel ``manager`` (not started yet) take its kernel from the fork server named by
    :data:`SOCKET_ENV` in this process's environment, when there is one."""
    if os.environ.get(SOCKET_ENV) and manager.provisioner is None:
        import uuid

        manager.kernel_id = manager.kernel_id or str(uuid.uuid4())
        manager.provisioner = _provisioner_class()(kernel_id=manager.kernel_id, kernel_spec=manager.kernel_spec,
                                                   parent=manager)


@functools.cache
def _provisioner_class() -> type:
    from jupyter_client.provisioning import LocalProvisioner

    class ForkedProvisioner(LocalProvisioner):
        """jupyter_client's local provisioner, whose kernel comes from the fork server when it can; else it
        starts the kernel as LocalProvisioner does."""

        async def launch_kernel(self, cmd: list[str], **kwargs: Any):
            forked = fork_kernel(cmd, **kwargs)
            if forked is None:
                return await super().launch_kernel(cmd, **kwargs)
            self.process = forked
            self.pid = self.pgid = forked.pid  # the kernel leads a session and process group of its own
            self.cwd = kwargs.get("cwd") or os.getcwd()
            return self.connection_info

    return ForkedProvisioner


def fork_kernel(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
                stdout: Any = None, stderr: Any = None, **_: Any) -> _Forked | None:
    """Ask the fork server for a kernel running ``cmd``; None when there is no server to ask, it is gone, or
    ``cmd`` is not ``<this python> -m ipykernel_launcher ...``."""
    env = dict(os.environ if env is None else env)
    path = env.pop(SOCKET_ENV, None)
    if not path or len(cmd) < 3 or tuple(cmd[1:3]) != _LAUNCHER or not _same_file(cmd[0], sys.executable):
        return None
    request = json.dumps({"args": cmd[3:], "env": env, "cwd": str(cwd or os.getcwd()), "owner": os.getpid()})
    fds = [_fileno(stdout, 1), _fileno(stderr, 2)]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(REPLY_TIMEOUT)
        conn.connect(path)
        socket.send_fds(conn, [_HEADER.pack(len(request))], fds)
        conn.sendall(request.encode())
        reply = json.loads(_read_line(conn))
        pid = int(reply["pid"])
    except (OSError, ValueError, KeyError):  # no server (it died, or was never started): start it the usual way
        conn.close()
        return None
    forked = _forked[pid] = _Forked(pid, conn)
    return forked


def forked_pids() -> list[int]:
    """Pids of the kernels this process had forked that are still running."""
    return [pid for pid, forked in list(_forked.items()) if forked.poll() is None]


class _Forked:
    """A forked kernel as jupyter_client's provisioner handles a ``Popen``: poll, wait, signals.

    Its exit status comes from the server, its parent, over the connection that asked for it.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int, conn: socket.socket):
        self.pid, self._conn = pid, conn
        self._conn.setblocking(False)
        self.returncode: int | None = None
        self._orphan = False  # the server is gone: the kernel's end is known only by its pid

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if not self._orphan:
            try:
                told = self._conn.recv(64)
            except BlockingIOError:
                return None
            except OSError:
                told = b""
            if told.startswith(b"exit "):
                self._done(int(told.split()[1]))
                return self.returncode
            self._orphan = True
        if not _alive(self.pid):
            self._done(-1)
        return self.returncode

    def _done(self, code: int) -> None:
        self.returncode = code
        self._conn.close()
        _forked.pop(self.pid, None)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _fileno(stream: Any, default: int) -> int:
    if isinstance(stream, int) and stream >= 0:
        return stream
    return stream.fileno() if hasattr(stream, "fileno") else default


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise OSError("the kernel fork server closed the connection")
        data += chunk
    return data


# The server ---------------------------------------------------------------------------------------------------


def serve(fd: int, path: str, modules: list[str], owner: int) -> None:
    """Import ``modules``, then fork a kernel for each request on the listening socket ``fd`` (bound to ``path``,
    removed on the way out) until ``owner`` is gone."""
    listener = socket.socket(fileno=fd)
    try:
        _import(modules)
        _serve(listener, owner)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))


def _serve(listener: socket.socket, owner: int) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears of children
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    owner_fd = _pidfd(owner)
    if owner_fd is not None:
        selector.register(owner_fd, selectors.EVENT_READ, "owner")

    def close_in_child() -> None:
        selector.close()
        listener.close()
        for fd in (wake_r, wake_w, owner_fd):
            if fd is not None:
                os.close(fd)

    children: dict[int, socket.socket] = {}
    while os.getppid() == owner:
        for key, _ in selector.select(timeout=POLL_SECONDS):
            if key.data == "owner":
                return
            if key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(children)
            else:
                conn, _ = listener.accept()
                with contextlib.suppress(OSError, ValueError, struct.error):  # that request only: it is closed
                    _fork(conn, children, close_in_child)


def _import(modules: list[str]) -> None:
    """What every kernel imports, then the project's preloads, as a kernel would (ipykernel's matplotlib backend
    set first, since matplotlib reads it at import)."""
    from runner.notebook.grammars import defer_iri_grammars

    defer_iri_grammars()
    os.environ["SPT_NOENV"] = "1"  # a kernel's title goes over the command line, not the environment's block
    try:
        import setproctitle

        setproctitle.getproctitle()  # finds the command line now, while the environment is the one it began with
        setproctitle.setthreadtitle(os.path.basename(sys.executable)[:15])  # the name top shows, not the title's
    except ImportError:
        pass
    finally:
        del os.environ["SPT_NOENV"]
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    import ipykernel.ipkernel  # noqa: F401
    import ipykernel.kernelapp  # noqa: F401

    for module in modules:
        try:
            __import__(module)
        except Exception as exc:  # the kernel imports it again, and the notebook's own import reports it
            print(f"kernel fork server: could not preload {module}: {exc}", file=sys.stderr, flush=True)


def _fork(conn: socket.socket, children: dict[int, socket.socket], close_server: Callable[[], None]) -> None:
    conn.settimeout(10)
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 2)
    try:
        (length,) = _HEADER.unpack(header)
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                raise OSError("the step process went away")
            body += chunk
        request = json.loads(body)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child writes what is buffered here again
        pid = os.fork()
        if pid == 0:
            close_server()
            for other in children.values():
                other.close()
            conn.close()
            _become_kernel(request, fds)  # never returns
        children[pid] = conn
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except BaseException:
        conn.close()
        raise
    finally:
        for fd in fds:
            os.close(fd)


def _reap(children: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def _become_kernel(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the kernel's session, files, folder, environment and command line, and run it."""
    code: Any = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [_launcher_path(), *request["args"]]
        sys.path[0] = os.getcwd()  # as `python -m` sets it in the folder the kernel starts in (the server's was)
        _retitle([sys.executable, *_LAUNCHER, *request["args"]])
        _die_with(int(request["owner"]))
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _retitle(argv: list[str]) -> None:
    """Show ``argv`` as this process's command line (``ps``, ``/proc/<pid>/cmdline``): a kernel's, not the server's.

    setproctitle writes it where the server's command line was, which left room for it (:data:`_TITLE_ROOM`); the
    server imported it (:func:`_import`), since it finds that place from the environment as the process began."""
    with contextlib.suppress(ImportError):
        import setproctitle

        # Blanks to the end of the room, or the zeros setproctitle leaves there read as empty arguments (psutil)
        room = sum(len(arg.encode()) + 1 for arg in sys.orig_argv) - 2
        setproctitle.setproctitle(" ".join(argv).ljust(room))
        setproctitle.setthreadtitle(os.path.basename(argv[0])[:15])  # the name top shows, which it set to the title's


def _launcher_path() -> str:
    import ipykernel_launcher

    return ipykernel_launcher.__file__


def _die_with(owner: int) -> None:
    """SIGKILL this kernel's process group (itself and what it started) as soon as ``owner`` is gone."""
    fd = _pidfd(owner)

    def watch() -> None:
        if fd is not None:
            import select

            select.select([fd], [], [])
        else:
            while _alive(owner):
                time.sleep(POLL_SECONDS)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="step-watch", daemon=True).start()


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` ends (Linux 5.3+), None where there is none to be had."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        r, w = os.pipe()  # already gone: readable at once
        os.close(w)
        return r
    except (AttributeError, OSError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        pass
    return True


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], json.loads(os.environ.get(MODULES_ENV, "[]")), int(os.environ[OWNER_ENV]))
