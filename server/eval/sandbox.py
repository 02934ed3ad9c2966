"""Running untrusted code (a corpus's tests with a model's completion inserted) with limits and no network.

``run_sandboxed`` starts one command and returns how it ended.  What it guards against, and how:

- time: a wall-clock timeout, after which the whole process group is killed (the command runs in a new
  session, so its children and grandchildren share the group); ``RLIMIT_CPU`` a little above the timeout
  as a second line for a busy loop that somehow outlives the group kill;
- memory: ``RLIMIT_AS`` (address space), so a runaway allocation fails with ``MemoryError`` rather than
  taking the machine; ``RLIMIT_FSIZE`` caps any file it writes, ``RLIMIT_CORE`` 0 writes no core dumps;
- network: ``unshare --net`` (util-linux) puts the command in an empty network namespace where only a
  downed loopback exists, when the kernel lets us (root in a container usually can; probed once per
  process).  Python children always also get an audit hook (a ``sitecustomize`` module on ``PYTHONPATH``)
  that refuses ``connect``/``bind``/``sendto``/``sendmsg`` on anything but ``AF_UNIX`` and every name
  lookup: an audit hook cannot be removed by the code it watches, and it covers the case where
  namespaces are not available.  ``SandboxResult.network_isolation`` names what was in force;
- environment: built from scratch (no proxy variables, no credentials inherited), ``HOME`` and ``TMPDIR``
  in a fresh temporary folder removed afterwards, ``PYTHONDONTWRITEBYTECODE=1``.

Never ``shell=True``: the command is a list of arguments.  ``preexec_fn`` sets the limits in the child
between fork and exec; it only calls ``resource.setrlimit`` (no allocation, no locks), which is the use the
``subprocess`` documentation tolerates even with threads running.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Defaults of ``opportune eval --test-timeout/--test-memory-mb`` (here, so the CLI can name them without
# importing the harness).
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_MB = 1024
TAIL_CHARS = 4000  # of stdout and stderr kept in the result: enough to read a traceback
FILE_SIZE_LIMIT_MB = 64
CPU_GRACE_S = 5  # RLIMIT_CPU = timeout + this: the wall clock should always fire first
PROBE_TIMEOUT_S = 10
# Variables a child may inherit from us; everything else (proxies, tokens, the user's config) is dropped.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
PROXY_VARIABLES = frozenset(
    {"http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy", "socks_proxy", "rsync_proxy"}
)
NO_NETWORK_MESSAGE = "network access is disabled in the Opportune eval sandbox"

# Installed into every Python child.  Kept free of imports beyond sys and socket, and of names that could
# clash with the code under test (everything is inside a function).
SITECUSTOMIZE = f'''"""Opportune eval sandbox: no network for this interpreter (an audit hook cannot be removed)."""


def _opportune_install_network_guard():
    import socket
    import sys

    unix = getattr(socket, "AF_UNIX", None)
    on_socket = frozenset({{"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"}})
    lookups = frozenset(
        {{
            "socket.getaddrinfo",
            "socket.gethostbyname",
            "socket.gethostbyname_ex",
            "socket.gethostbyaddr",
            "socket.getnameinfo",
        }}
    )

    def hook(event, args):
        if event in on_socket:
            family = getattr(args[0], "family", None) if args else None
            if unix is None or family != unix:
                raise PermissionError({NO_NETWORK_MESSAGE!r} + ": " + event)
        elif event in lookups:
            raise PermissionError({NO_NETWORK_MESSAGE!r} + ": " + event)

    sys.addaudithook(hook)


_opportune_install_network_guard()
del _opportune_install_network_guard
'''


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed command ended."""

    returncode: int | None  # negative: killed by that signal; None: never started
    timed_out: bool
    out_of_memory: bool  # best effort: a MemoryError (or the C equivalents) in its output
    seconds: float
    stdout_tail: str
    stderr_tail: str
    network_isolation: str  # e.g. "unshare --net + python audit hook", or "python audit hook only"

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """One short phrase for reports: why it did not pass (or "passed")."""
        if self.passed:
            return "passed"
        if self.timed_out:
            return "timed out"
        if self.out_of_memory:
            return "out of memory"
        if self.returncode is None:
            return "could not start"
        if self.returncode < 0:
            try:
                return f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"


def _probe(cmd: Sequence[str]) -> bool:
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, timeout=PROBE_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@functools.cache  # a fact about this machine and process: probed once, never changes while we run
def network_namespace_prefix() -> tuple[str, ...]:
    """The command prefix that runs a command without network (``unshare --net``), or () when none works.

    As root (or with CAP_SYS_ADMIN) plain ``--net`` works; an unprivileged user may still be allowed a user
    namespace, in which ``--map-root-user`` grants the right to make a network namespace.
    """
    unshare = shutil.which("unshare")
    true = shutil.which("true")
    if unshare is None or true is None:
        return ()
    for prefix in ((unshare, "--net"), (unshare, "--net", "--map-root-user")):
        if _probe([*prefix, "--", true]):
            return prefix
    return ()


def _isolation_name(prefix: Sequence[str]) -> str:
    if not prefix:
        return "python audit hook only (no network namespace available)"
    return " ".join(["unshare", *prefix[1:]]) + " + python audit hook"


def network_isolation() -> str:
    """What ``run_sandboxed`` uses on this machine to keep commands off the network (for reports)."""
    return _isolation_name(network_namespace_prefix())


def _limits(timeout_s: float, memory_mb: int) -> Callable[[], None]:
    memory = memory_mb * 1024 * 1024
    cpu = int(timeout_s) + CPU_GRACE_S
    fsize = FILE_SIZE_LIMIT_MB * 1024 * 1024

    def apply() -> None:  # runs in the child between fork and exec: setrlimit only
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + CPU_GRACE_S))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def scrubbed_environment(
    home: Path, tmp: Path, hook_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The child's whole environment: a few harmless inherited variables, the sandbox's own, and ``extra``."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    for key, value in (extra or {}).items():
        if key.lower() not in PROXY_VARIABLES:
            env[key] = value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH", "")]))
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        TEMP=str(tmp),
        TMP=str(tmp),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",  # the user's own site-packages are not part of the test environment
        PYTHONIOENCODING="utf-8",
        NO_COLOR="1",
    )
    return env


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - TAIL_CHARS * 4))
        text = f.read().decode("utf-8", "replace")
    return text[-TAIL_CHARS:]


def _kill_group(pgid: int) -> None:
    # ProcessLookupError: every member is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def run_sandboxed(
    cmd: Sequence[str],
    cwd: Path,
    *,
    timeout_s: float,
    memory_mb: int,
    env_extra: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run ``cmd`` in ``cwd`` with the limits above; never raises for what the command does."""
    prefix = network_namespace_prefix()
    isolation = _isolation_name(prefix)
    with tempfile.TemporaryDirectory(prefix="opportune-sandbox-") as scratch:
        root = Path(scratch)
        home, tmp, hook_dir = root / "home", root / "tmp", root / "hook"
        for folder in (home, tmp, hook_dir):
            folder.mkdir()
        (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = scrubbed_environment(home, tmp, hook_dir, env_extra)
        out_path, err_path = root / "stdout", root / "stderr"
        started = time.perf_counter()
        timed_out = False
        with out_path.open("wb") as out, err_path.open("wb") as err:
            try:
                proc = subprocess.Popen(
                    [*prefix, "--", *cmd] if prefix else list(cmd),
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group: one killpg ends the whole tree
                    preexec_fn=_limits(timeout_s, memory_mb),
                    close_fds=True,
                )
            except OSError as e:
                return SandboxResult(None, False, False, 0.0, "", str(e), isolation)
            try:
                returncode: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                returncode = proc.wait()
            finally:
                # Children left behind by a command that exited (a daemonised sleeper) go too.
                _kill_group(proc.pid)
        seconds = time.perf_counter() - started
        stdout, stderr = _tail(out_path), _tail(err_path)
    out_of_memory = not timed_out and any(sign in stdout or sign in stderr for sign in _MEMORY_SIGNS)
    return SandboxResult(returncode, timed_out, out_of_memory, seconds, stdout, stderr, isolation)
