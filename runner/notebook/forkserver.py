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

The runner's step processes come from the same server (:meth:`ForkServer.fork`): a step process imports papermill
and nbconvert and compiles the page's templates (about 1.7 s of CPU), and a pipeline starts one per step. Such a
request names the function the child runs (``module:function``), with its standard streams; the runner gets a
handle like a ``Popen``'s (:class:`Forked`). The server imports what those children need first (``processes``;
an entry ``module:function`` is imported, then called once), and serves their requests between its imports of
what kernels need (ipykernel, then ``kernels``, the project's preloads): a step process is forked within a second
or two of the server's start, while a kernel's request waits until every import is done.

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
MODULES_ENV = "RUNNER_FORKSERVER_MODULES"  # in the server's: JSON, the modules it imports for processes and kernels
OWNER_ENV = "RUNNER_FORKSERVER_OWNER"  # in the server's: the pid it lives and dies with
REPLY_TIMEOUT = 300.0  # seconds a step process waits for its kernel's pid (the server may still be importing)
# seconds the runner waits for a step process's pid: the server answers between two imports, so only an import that
# hangs (a preload that connects somewhere) keeps it longer; the process then starts the usual way
PROCESS_REPLY_TIMEOUT = 60.0
# seconds one of the server's imports may take: past that the server ends (see _load), and every kernel and step
# process of its runner starts the usual way instead of waiting for it
PRELOAD_TIMEOUT = 120.0
LOG_KEPT_BYTES = 1 << 20  # a server's log (every server of a home appends to one) moves to <log>.1 past this size
POLL_SECONDS = 0.5  # how often the server and its kernels look for their owner, where a pidfd is not to be had
_HEADER = struct.Struct("!Q")  # a request: its length, with the child's stdout and stderr (and stdin) attached
_LAUNCHER = ("-m", "ipykernel_launcher")
# Blanks at the end of the server's command line: the room a kernel's own command line takes there (setproctitle)
_TITLE_ROOM = 256
_forked: dict[int, Forked] = {}  # the kernels this process had forked, by pid


class ForkServer:
    """The fork server of one runner process (or worker): started at once, importing while steps get ready.

    ``env`` goes into the environment of the step processes that should use it; :meth:`fork` starts one of them
    from it; :meth:`close` ends it (what it forked runs on). Its own output (a preload that failed to import) goes
    to ``log``, which is moved to ``<log>.1`` first once it holds more than :data:`LOG_KEPT_BYTES`.
    """

    def __init__(self, kernels: tuple[str, ...], log: str | Path, processes: tuple[str, ...] = (),
                 preload_timeout: float = PRELOAD_TIMEOUT):
        import subprocess

        self._folder = tempfile.mkdtemp(prefix="runner-kernels-")  # 0700: only this user may ask it to fork
        self.socket = os.path.join(self._folder, "socket")
        # Listening before the server starts: step processes may connect (and wait) while it imports
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket)
        listener.listen(64)
        modules = json.dumps({"processes": list(processes), "kernels": list(kernels), "timeout": preload_timeout})
        env = {**os.environ, MODULES_ENV: modules, OWNER_ENV: str(os.getpid())}
        with contextlib.suppress(OSError):
            if os.path.getsize(log) > LOG_KEPT_BYTES:
                os.replace(log, f"{log}.1")  # a server still writing to it goes on writing there
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

    def fork(self, target: str, title: list[str], env: dict[str, str], stderr: Any) -> Forked | None:
        """A process forked from the server that runs ``target`` (``module:function``, of the server's
        ``processes``) with a pipe on its stdin and one on its stdout (the handle's ``stdin`` and ``stdout``,
        binary) and ``stderr``, in a session of its own, shown as ``title`` in ``ps``; waits while the server
        imports those modules. None when the server is gone (start it the usual way)."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            forked = _request(self.socket, {"target": target, "title": title, "env": env, "cwd": os.getcwd()},
                              [stdout_w, _fileno(stderr, 2), stdin_r], PROCESS_REPLY_TIMEOUT)
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        if forked is None:
            os.close(stdin_w)
            os.close(stdout_r)
            return None
        forked.stdin, forked.stdout = os.fdopen(stdin_w, "wb"), os.fdopen(stdout_r, "rb")
        return forked

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
                stdout: Any = None, stderr: Any = None, **_: Any) -> Forked | None:
    """Ask the fork server for a kernel running ``cmd``; None when there is no server to ask, it is gone, or
    ``cmd`` is not ``<this python> -m ipykernel_launcher ...``."""
    env = dict(os.environ if env is None else env)
    path = env.pop(SOCKET_ENV, None)
    if not path or len(cmd) < 3 or tuple(cmd[1:3]) != _LAUNCHER or not _same_file(cmd[0], sys.executable):
        return None
    forked = _request(path, {"args": cmd[3:], "env": env, "cwd": str(cwd or os.getcwd()), "owner": os.getpid()},
                      [_fileno(stdout, 1), _fileno(stderr, 2)])
    if forked is not None:
        _forked[forked.pid] = forked
    return forked


def _request(path: str, request: dict[str, Any], fds: list[int], timeout: float = REPLY_TIMEOUT) -> Forked | None:
    """The child the server at ``path`` forked for ``request`` (with ``fds``: stdout, stderr, and stdin if
    given); None when there is no server to ask (it died, or was never started) or it did not answer within
    ``timeout`` seconds (a child it forks later finds its pipes closed)."""
    body = json.dumps(request).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(path)
        socket.send_fds(conn, [_HEADER.pack(len(body))], fds)
        conn.sendall(body)
        reply, rest = _read_line(conn)
        pid = int(json.loads(reply)["pid"])
    except (OSError, ValueError, KeyError):
        conn.close()
        return None
    return Forked(pid, conn, rest)


def forked_pids() -> list[int]:
    """Pids of the kernels this process had forked that are still running."""
    return [pid for pid, forked in list(_forked.items()) if forked.poll() is None]


class Forked:
    """A forked child as one handles a ``Popen`` (jupyter_client's provisioner, the runner's step processes):
    poll, wait, signals, and the pipes it was given.

    Its exit status comes from the server, its parent, over the connection that asked for it.
    """

    stdin: Any = None
    stdout: Any = None
    stderr: Any = None

    def __init__(self, pid: int, conn: socket.socket, told: bytes = b""):
        self.pid, self._conn = pid, conn
        self._conn.setblocking(False)
        self._told = told  # what the server said after the pid: ``exit <code>\n``, once the child ended
        self.returncode: int | None = None
        self._orphan = False  # the server is gone: the child's end is known only by its pid

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if not self._orphan:
            while b"\n" not in self._told:
                try:
                    chunk = self._conn.recv(64)
                except BlockingIOError:
                    return None
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                self._told += chunk
            line = self._told.split(b"\n")[0]
            if b"\n" in self._told and line.startswith(b"exit "):
                self._done(int(line.split()[1]))
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
        import select

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
            if left <= 0:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            if self._orphan:
                time.sleep(min(left, 0.05))
            else:
                select.select([self._conn], [], [], left)  # until the server tells of its end
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


def _read_line(conn: socket.socket) -> tuple[bytes, bytes]:
    """A line the server sent, and what it sent after it (a child that ended at once: its exit)."""
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise OSError("the kernel fork server closed the connection")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, rest


# The server ---------------------------------------------------------------------------------------------------


def serve(fd: int, path: str, modules: dict[str, list[str]], owner: int) -> None:
    """Import ``modules["processes"]``, then fork a child for each request on the listening socket ``fd`` (bound to
    ``path``, removed on the way out) until ``owner`` is gone, importing what kernels need between requests."""
    listener = socket.socket(fileno=fd)
    timeout = float(modules.get("timeout", PRELOAD_TIMEOUT))
    try:
        _prepare()
        for entry in modules.get("processes", []):
            _load(entry, timeout)
        _serve(listener, owner, ["ipykernel.ipkernel", "ipykernel.kernelapp", *modules.get("kernels", [])], timeout)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))


def _serve(listener: socket.socket, owner: int, imports: list[str], timeout: float) -> None:
    """Serve requests until ``owner`` is gone; while ``imports`` remain, import one between looks at the socket
    (each within ``timeout`` seconds: :func:`_load`), and keep kernels' requests waiting until the last is imported."""
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
    children: dict[int, socket.socket] = {}
    waiting: list[tuple[socket.socket, dict[str, Any], list[int]]] = []  # kernels' requests, until imports are done

    def close_in_child() -> None:
        selector.close()
        listener.close()
        for fd in (wake_r, wake_w, owner_fd):
            if fd is not None:
                os.close(fd)
        for conn in [*children.values(), *(conn for conn, _, _ in waiting)]:
            conn.close()

    def fork(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        try:
            _fork(conn, request, fds, children, close_in_child)
        except (OSError, ValueError):  # that request only: it is closed
            pass

    while os.getppid() == owner:
        for key, _ in selector.select(timeout=0 if imports else POLL_SECONDS):
            if key.data == "owner":
                return
            if key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(children)
                continue
            conn, _ = listener.accept()
            received = _receive(conn)
            if received is not None and imports and "target" not in received[0]:
                waiting.append((conn, *received))
            elif received is not None:
                fork(conn, *received)
        if imports:
            _load(imports.pop(0), timeout)
            if not imports:
                while waiting:
                    fork(*waiting.pop(0))


def _prepare() -> None:
    """What the server does before any import: jsonschema's IRI grammars put off, setproctitle told where the
    command line is, ipykernel's matplotlib backend set (matplotlib reads it at import)."""
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


def _load(entry: str, timeout: float) -> None:
    """Import ``entry``'s module and, for ``module:function``, call the function; a failure is logged, not raised
    (the child imports it again, and the notebook's own import reports it).

    An import still running after ``timeout`` seconds (a preload that connects somewhere that does not answer) ends
    the server, saying so in its log: it cannot be interrupted, and while it runs the server answers nobody, so each
    kernel of the runner would wait for it (:data:`REPLY_TIMEOUT`) before starting the usual way. With the server
    gone, they find no one at the socket and start the usual way at once. The watching thread is joined before the
    server goes on, so no thread of it is running when it forks."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(timeout):
            print(f"kernel fork server: importing {entry} took longer than {timeout:g} s, so the server stopped; "
                  "kernels and step processes start the usual way. Check what the import waits for, or take it out "
                  "of defaults.preload in runner.yaml", file=sys.stderr, flush=True)
            os._exit(3)

    watcher = threading.Thread(target=watch, name="runner-preload-watch", daemon=True)
    watcher.start()
    try:
        _call(entry)
    except Exception as exc:
        print(f"kernel fork server: could not preload {entry}: {exc}", file=sys.stderr, flush=True)
    finally:
        done.set()
        watcher.join()


def _call(entry: str) -> None:
    """Import ``entry``'s module (``module`` or ``module:function``) and call its function, if it names one."""
    import importlib

    module, _, function = entry.partition(":")
    imported = importlib.import_module(module)
    if function:
        getattr(imported, function)()


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """A request and the descriptors attached to it; None (the connection closed) when it is malformed."""
    fds: list[int] = []
    try:
        conn.settimeout(10)
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        (length,) = _HEADER.unpack(header)
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                raise OSError("the step process went away")
            body += chunk
        request = json.loads(body)
        if not isinstance(request, dict) or len(fds) < 2:
            raise ValueError("not a request")
        return request, list(fds)
    except (OSError, ValueError, struct.error):
        conn.close()
        for fd in fds:
            os.close(fd)
        return None


def _fork(conn: socket.socket, request: dict[str, Any], fds: list[int], children: dict[int, socket.socket],
          close_server: Callable[[], None]) -> None:
    try:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child writes what is buffered here again
        pid = os.fork()
        if pid == 0:
            close_server()
            conn.close()
            _become(request, fds)  # never returns
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


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the session, files, folder, environment and command line asked for, and run the
    kernel (``args``: its command line's) or the function (``target``: ``module:function``)."""
    code: Any = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        stdin = fds[2] if len(fds) > 2 else os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in {stdin, *fds}:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = os.getcwd()  # as `python -m` sets it in the folder the child starts in (the server's was)
        _reseed()
        if "target" in request:
            sys.argv = list(request["title"][2:]) or [sys.executable]
            _retitle(list(request["title"]))
            _call(request["target"])
        else:
            sys.argv = [_launcher_path(), *request["args"]]
            _retitle([sys.executable, *_LAUNCHER, *request["args"]])
            on_exit(int(request["owner"]), lambda: os.killpg(0, signal.SIGKILL), "step-watch")
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
    server imported it (:func:`_prepare`), since it finds that place from the environment as the process began."""
    with contextlib.suppress(ImportError):
        import setproctitle

        # Blanks to the end of the room, or the zeros setproctitle leaves there read as empty arguments (psutil)
        room = sum(len(arg.encode()) + 1 for arg in sys.orig_argv) - 2
        setproctitle.setproctitle(" ".join(argv).ljust(room))
        setproctitle.setthreadtitle(os.path.basename(argv[0])[:15])  # the name top shows, which it set to the title's


def _reseed() -> None:
    """A fresh seed for numpy's global generator, which the children would otherwise share with the server (the
    standard library's ``random`` reseeds itself after a fork)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            numpy.random.seed()


def _launcher_path() -> str:
    import ipykernel_launcher

    return ipykernel_launcher.__file__


def on_exit(pid: int, action: Callable[[], None], name: str) -> None:
    """Call ``action`` in a thread of its own (a daemon, called ``name``) as soon as process ``pid`` is gone: at
    once through a pidfd (Linux 5.3+), else within :data:`POLL_SECONDS`. A forked kernel SIGKILLs its process
    group when its step process is gone; a step process kills its kernel when its runner is."""
    fd = _pidfd(pid)

    def watch() -> None:
        if fd is not None:
            import select

            select.select([fd], [], [])
        else:
            while _alive(pid):
                time.sleep(POLL_SECONDS)
        action()

    threading.Thread(target=watch, name=name, daemon=True).start()


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
    serve(int(sys.argv[1]), sys.argv[2], json.loads(os.environ.get(MODULES_ENV, "{}")), int(os.environ[OWNER_ENV]))
