"""The shared stage for bench/peers.py: tools, the TLS-fronted S3 endpoint and both tools' repositories.

  tools      pgBackRest and haproxy are Debian packages: `apt-get install -y pgbackrest haproxy`
             (as root; `bench/peers.py --install` runs exactly that when one is missing). opsdb is
             measured through a regular (not editable) install that the `postgres` user can run,
             `/usr/bin/python3 -m venv V && V/bin/pip install .` (`--build-venv` does it).
  endpoint   one moto server on 127.0.0.1 (plain HTTP) behind haproxy, which terminates TLS with a
             self-signed certificate made here (subjectAltName DNS:127.0.0.1 for pgBackRest, which
             matches only DNS names, and IP:127.0.0.1 for Python's ssl). Both tools talk HTTPS
             to haproxy and verify the certificate: pgBackRest through repo1-storage-ca-file, opsdb
             (boto3) through AWS_CA_BUNDLE. haproxy rather than moto's own --ssl: werkzeug closes TLS
             connections without close_notify, which pgBackRest (OpenSSL 3) rejects.
  repos      per tool, per kind (s3 on the endpoint, posix in a local directory), per use: every WAL
             drain and call series gets a fresh, empty repository, so no tool skips a segment
             because an earlier row stored it already.

Both tools compress with zstd level 1 and encrypt (opsdb AES-256-GCM with a key file, pgBackRest
aes-256-cbc with a passphrase); pgBackRest uses process-max=2 (the machine's cores), opsdb its
defaults. Both run as the `postgres` OS user, as PostgreSQL runs archive_command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from wal import as_pg, chown, free_port, sh

BUCKET = "peerbench"
PGBR_CIPHER_PASS = "peerbench-not-a-secret"  # a throwaway repository on a throwaway endpoint


def run(argv: list[str], **kw: object) -> str:
    """Run argv; on failure stop the bench with the command's own message."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}")
    return str(proc.stdout)


def need_tools(install: bool) -> None:
    missing = [name for name in ("pgbackrest", "haproxy", "openssl") if shutil.which(name) is None]
    if missing and install and os.geteuid() == 0:
        packages = [{"openssl": "openssl"}.get(name, name) for name in missing]
        subprocess.run(
            ["apt-get", "install", "-y", *packages], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        )
        missing = [name for name in missing if shutil.which(name) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install -y pgbackrest haproxy (as root), or --install")


def opsdb_venv(path: Path, rebuild: bool) -> Path:
    """A regular install of this checkout that the postgres user can execute."""
    if rebuild or not (path / "bin" / "opsdb").exists():
        repo = Path(__file__).resolve().parents[1]
        shutil.rmtree(path, ignore_errors=True)
        sh(["/usr/bin/python3", "-m", "venv", str(path)])
        sh([str(path / "bin" / "pip"), "install", "-q", str(repo)])
    return path / "bin" / "opsdb"


class Endpoint:
    """moto on HTTP, haproxy terminating TLS in front of it; `url` is the HTTPS address."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.cert = work / "tls" / "cert.pem"
        self.moto_port, self.port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.moto: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        tls = self.cert.parent
        tls.mkdir(parents=True)
        key = tls / "key.pem"
        sh(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(self.cert),
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=DNS:127.0.0.1,IP:127.0.0.1",
            ]
        )
        (tls / "haproxy.pem").write_bytes(self.cert.read_bytes() + key.read_bytes())
        os.chmod(tls, 0o755)
        os.chmod(self.cert, 0o644)
        moto_server = Path(sys.executable).with_name("moto_server")
        self.moto = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        cfg = tls / "haproxy.cfg"
        cfg.write_text(
            "global\n  maxconn 256\n  tune.ssl.default-dh-param 2048\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n"
            f"frontend s3tls\n  bind 127.0.0.1:{self.port} ssl crt {tls / 'haproxy.pem'}\n  default_backend moto\n"
            f"backend moto\n  server moto 127.0.0.1:{self.moto_port}\n"
        )
        self.proxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CA_BUNDLE=str(self.cert),
        )
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.moto_port}/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")
        for _ in range(100):  # through haproxy and TLS: proves the certificate and the proxy work
            try:
                s3.create_bucket(Bucket=BUCKET)
                return
            except Exception:  # haproxy still starting
                time.sleep(0.1)
        raise SystemExit(f"the S3 endpoint {self.url} (haproxy -> moto) does not answer")

    def stop(self) -> None:
        for proc in (self.proxy, self.moto):
            if proc is None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # moto_server may ignore SIGTERM
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class Tools:
    """Writes one config per (tool, repository) and knows each tool's commands."""

    def __init__(self, work: Path, endpoint: Endpoint, data: Path, port: int, opsdb: Path, bin_dir: Path) -> None:
        self.work, self.endpoint, self.data, self.port = work, endpoint, data, port
        self.opsdb, self.bin = opsdb, bin_dir
        self.key = work / "opsdb.key"
        (work / "pgbr-log").mkdir()
        sh([str(opsdb), "key", "generate", str(self.key)])
        chown(self.key)
        chown(work / "pgbr-log")

    def opsdb_config(self, name: str, kind: str, *, wal: str = "", repo_name: str | None = None) -> Path:
        """An opsdb config (and spool) called `name` on the repository `repo_name` (default: its own)."""
        where = repo_name or name
        repo = (
            f'url = "s3://{BUCKET}/{where}"\nendpoint_url = "{self.endpoint.url}"\nregion = "us-east-1"\n'
            if kind == "s3"
            else f'url = "file://{self.work}/repo-{where}"\n'
        )
        path = self.work / f"opsdb-{name}.toml"
        path.write_text(
            f"[repository]\n{repo}"
            f'[encryption]\nkey_file = "{self.key}"\nrequired = true\n'
            '[compression]\nalgorithm = "zstd"\nlevel = 1\n'
            f'[clusters.main]\nconninfo = "host=127.0.0.1 port={self.port} user=postgres dbname=postgres"\n'
            f'pg_bin_dir = "{self.bin}"\nos_user = "postgres"\n'
            f'[wal]\nspool_dir = "{self.work}/spool-opsdb-{name}"\n{wal}'
        )
        chown(path)
        return path

    def pgbr_config(self, name: str, kind: str, *, extra: str = "", repo_name: str | None = None) -> Path:
        """A pgBackRest config called `name` on the repository `repo_name`; without one, a repository
        of its own, made by stanza-create."""
        where = repo_name or name
        if kind == "s3":
            repo = (
                f"repo1-type=s3\nrepo1-path=/{where}\nrepo1-s3-bucket={BUCKET}\nrepo1-s3-endpoint=127.0.0.1\n"
                f"repo1-storage-port={self.endpoint.port}\nrepo1-s3-region=us-east-1\nrepo1-s3-key=bench\n"
                f"repo1-s3-key-secret=bench\nrepo1-s3-uri-style=path\nrepo1-storage-ca-file={self.endpoint.cert}\n"
            )
        else:
            repo = f"repo1-type=posix\nrepo1-path={self.work}/repo-{where}\n"
        path = self.work / f"pgbr-{name}.conf"
        path.write_text(
            f"[global]\n{repo}repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={PGBR_CIPHER_PASS}\n"
            "repo1-retention-full=99\ncompress-type=zst\ncompress-level=1\nprocess-max=2\nstart-fast=y\n"
            f"log-path={self.work}/pgbr-log\nlock-path={self.work}/pgbr-lock-{name}\n"
            f"spool-path={self.work}/pgbr-spool-{name}\n{extra}"
            f"[main]\npg1-path={self.data}\npg1-port={self.port}\npg1-socket-path=/tmp\npg1-user=postgres\n"
        )
        os.chmod(path, 0o600)
        chown(path)
        if repo_name is None:
            run(as_pg(["pgbackrest", f"--config={path}", "--stanza=main", "stanza-create"]), cwd="/tmp")
        return path

    def push(self, tool: str, config: Path) -> str:
        """archive_command for `tool` with `config`."""
        if tool == "pgbackrest":
            return f"pgbackrest --config={config} --stanza=main archive-push %p"
        return f"{self.opsdb} --config {config} wal-push %p"

    def fetch(self, tool: str, config: Path, data: Path) -> str:
        """restore_command for `tool` with `config`, replaying into `data`."""
        if tool == "pgbackrest":
            return f'pgbackrest --config={config} --stanza=main --pg1-path={data} archive-get %f "%p"'
        return f"{self.opsdb} --config {config} wal-fetch %f %p"

    def backup(self, tool: str, config: Path) -> list[str]:
        if tool == "pgbackrest":
            return as_pg(["pgbackrest", f"--config={config}", "--stanza=main", "--type=full", "backup"])
        return as_pg([str(self.opsdb), "--config", str(config), "backup"])

    def restore(self, tool: str, config: Path, target: Path) -> list[str]:
        """Both sync what they restore: pgBackRest always, opsdb by default (fsync)."""
        if tool == "pgbackrest":
            return as_pg(["pgbackrest", f"--config={config}", "--stanza=main", f"--pg1-path={target}", "restore"])
        return as_pg([str(self.opsdb), "--config", str(config), "restore", "--target-dir", str(target)])


def stop_helper(spool: Path) -> None:
    """End the WAL helpers serving under `spool` as their idle exit would, and wait until each is gone
    (its lock is free): the next call is a first call after idle."""
    import fcntl

    for lock in spool.glob("**/helper/*.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                continue  # nobody holds it: no helper (and its pid may be another process's by now)
            except BlockingIOError:
                pass
            with contextlib.suppress(ValueError, IndexError, OSError):
                os.kill(int(lock.read_text().strip().split()[0]), signal.SIGTERM)
            fcntl.flock(fd, fcntl.LOCK_EX)  # granted once the helper exited
        finally:
            os.close(fd)


def stop_helpers(work: Path) -> None:
    """opsdb's WAL helpers outlive the calls that started them (they exit when idle): end the ones
    this run started, found by the pid in their spool's lock files, and only if it is still opsdb."""
    for lock in work.glob("spool-opsdb-*/**/*.lock"):
        try:
            pid = int(lock.read_text().strip().split()[0])
            if b"opsdb" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
        except (ValueError, IndexError, ProcessLookupError, PermissionError, OSError):
            pass
