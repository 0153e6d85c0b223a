"""Benchmark: the opsdb pipeline (zstd + AES-256-GCM + S3 multipart) against `zstd | openssl enc`.

    .venv/bin/python bench/pipeline.py [--size-mib 1024] [--levels 1,3] [--endpoint URL]

Every row runs in its own child process so peak RSS is that row's alone: VmHWM of the opsdb child,
or the largest ru_maxrss among the processes of a shell pipeline (RUSAGE_CHILDREN).
Without --endpoint a moto server is started on 127.0.0.1 and stopped at the end. The data is the same
generator everywhere (half random nibbles, half repeated CSV-like rows: zstd ratio ~0.27), made on
the fly and never held; it costs little ("generator alone" row) and that cost is inside every figure.
MB/s = plaintext bytes / wall seconds (10^6 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1024 * 1024
HERE = Path(__file__).resolve()
PY = sys.executable


# ------------------------------------------------------------------------------------ child modes


def generate(total: int) -> Iterator[bytes]:
    """1 MiB chunks: half random nibbles (from a pool of 8 blocks, so the generator costs almost
    nothing; a block repeats only every 8 MiB, beyond the 2 MiB window of zstd levels 1-3), half
    repeated CSV-like rows. Made on the fly; at most the 4 MiB pool plus one chunk exist."""
    table = bytes(97 + b % 16 for b in range(256))  # 4 bits of entropy per byte
    pool = [os.urandom(CHUNK // 2).translate(table) for _ in range(8)]
    rows = b"".join(
        b"%08d|2024-05-01 12:00:%02d|customer-%05d|active|%6d.%02d\n" % (i, i % 60, i % 9973, i * 7, i % 100)
        for i in range(CHUNK // 64)
    )[: CHUNK // 2]
    for i in range(total // CHUNK):
        yield pool[i % 8] + rows


def child_generate(total: int) -> None:
    out = sys.stdout.buffer
    for chunk in generate(total):
        out.write(chunk)
    out.flush()


def _codec(level: int) -> object:
    from opsdb.repo.envelope import Codec
    from opsdb.stream.crypto import EncryptionKey

    key = EncryptionKey.from_secret(bytes.fromhex(os.environ["BENCH_KEY"]))
    threads = int(os.environ["BENCH_THREADS"])
    return Codec(compression="zstd", level=level, threads=threads, key=key), {key.id: key}


def _report(**fields: object) -> None:
    # VmHWM, not ru_maxrss: Linux carries the parent's RSS over fork+exec into ru_maxrss
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    fields["maxrss_mb"] = peak_kb / 1024
    print(json.dumps(fields))


def child_encode_null(total: int, level: int) -> None:
    from opsdb.repo.envelope import put_object
    from opsdb.storage.base import ObjectInfo

    class NullStorage:  # consumes the stream and keeps nothing: the encode side alone
        url, features = "null://", frozenset()

        def put(self, key, chunks, *, if_absent=False, metadata=None):
            return ObjectInfo(key, sum(len(c) for c in chunks))

    codec, _ = _codec(level)
    t0 = time.perf_counter()
    stored = put_object(NullStorage(), "bench/null", generate(total), codec)  # type: ignore[arg-type]
    _report(seconds=time.perf_counter() - t0, stored=stored.stored_size)


def _storage(url: str, endpoint: str) -> object:
    from opsdb.storage import open_storage

    return open_storage(
        url, endpoint_url=endpoint, part_size=16 * 2**20, upload_concurrency=int(os.environ["BENCH_CONCURRENCY"])
    )


def child_put(total: int, level: int, url: str, endpoint: str) -> None:
    from opsdb.repo.envelope import put_object

    storage = _storage(url, endpoint)
    codec, _ = _codec(level)
    t0 = time.perf_counter()
    stored = put_object(storage, f"bench/l{level}", generate(total), codec)  # type: ignore[arg-type]
    _report(seconds=time.perf_counter() - t0, stored=stored.stored_size, sha256=stored.sha256)


def child_get(level: int, url: str, endpoint: str) -> None:
    from opsdb.repo.envelope import verify_object

    storage = _storage(url, endpoint)
    _, keys = _codec(level)
    t0 = time.perf_counter()
    got = verify_object(storage, f"bench/l{level}", keys)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    storage.delete([f"bench/l{level}"])  # type: ignore[attr-defined]
    _report(seconds=seconds, size=got.size, sha256=got.sha256)


def child_shell(command: str) -> None:
    """Run a shell pipeline; report wall time and the largest RSS of any process in it."""
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


# ------------------------------------------------------------------------------------------ parent


def run_child(args: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run([PY, str(HERE), *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench child {args[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/data.json", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto server did not start")


def make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--levels", default="1,3")
    ap.add_argument("--concurrency", type=int, default=2, help="S3 parts in flight")
    ap.add_argument("--threads", type=int, default=0, help="zstd worker threads (Codec.threads)")
    ap.add_argument("--endpoint")
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    opts = ap.parse_args()
    total = opts.size_mib * CHUNK
    levels = [int(x) for x in opts.levels.split(",")]

    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    env["BENCH_KEY"] = secrets.token_hex(32)  # in the children's environment, never in argv
    env["BENCH_PASS"] = secrets.token_hex(32)
    env["BENCH_CONCURRENCY"] = str(opts.concurrency)
    env["BENCH_THREADS"] = str(opts.threads)
    moto = None
    endpoint = opts.endpoint
    if endpoint is None:
        moto, endpoint = start_moto()
    bucket = f"bench-{secrets.token_hex(4)}"
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    make_bucket(endpoint, bucket)
    url = f"s3://{bucket}/repo"
    size = str(total)
    rows: list[tuple[str, str, float, float]] = []

    def row(name: str, command: str, result: dict) -> None:
        rows.append((name, command, total / result["seconds"] / 1e6, result["maxrss_mb"]))
        print(
            f"  {name}: {total / result['seconds'] / 1e6:.0f} MB/s, peak RSS {result['maxrss_mb']:.1f} MB",
            file=sys.stderr,
        )

    try:
        gen = run_child(["shell", f"{PY} {HERE} generate {size} > /dev/null"], env)
        row("generator alone", "bench/pipeline.py generate > /dev/null", gen)
        for level in levels:
            row(
                f"opsdb encode zstd-{level}+aes256gcm -> null",
                "put_object(NullStorage)",
                run_child(["encode-null", size, str(level)], env),
            )
            put = run_child(["put", size, str(level), url, endpoint], env)
            row(
                f"opsdb put zstd-{level}+aes256gcm -> moto S3",
                f"put_object(S3, part 16 MiB, concurrency {opts.concurrency})",
                put,
            )
            got = run_child(["get", str(level), url, endpoint], env)
            assert got["sha256"] == put["sha256"] and got["size"] == total, "round trip mismatch"
            row(f"opsdb get moto S3 -> verify (zstd-{level})", "verify_object(S3)", got)
            ref = Path(opts.workdir) / f"opsdb-bench-ref-{level}.zst.enc"
            enc = f"{PY} {HERE} generate {size} | zstd -{level} -q -c | openssl enc -aes-256-ctr -pbkdf2 -pass env:BENCH_PASS > {ref}"
            row(
                f"reference zstd -{level} | openssl enc -> file",
                enc.replace(str(HERE), "bench/pipeline.py"),
                run_child(["shell", enc], env),
            )
            dec = f"openssl enc -d -aes-256-ctr -pbkdf2 -pass env:BENCH_PASS < {ref} | zstd -d -q -c > /dev/null"
            row("reference file -> openssl enc -d | zstd -d", dec, run_child(["shell", dec], env))
            ref.unlink(missing_ok=True)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)

    print(
        f"\n{opts.size_mib} MiB, generated data (zstd ratio ~0.27), {os.cpu_count()} cores, zstd threads {opts.threads}, "
        f"S3 parts in flight {opts.concurrency}; MB/s = plaintext bytes / wall\n"
    )
    print(f"| {'row':<46} | {'MB/s':>6} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 48}|{'-' * 8}|{'-' * 13}|")
    for name, _, mbps, rss in rows:
        print(f"| {name:<46} | {mbps:>6.0f} | {rss:>11.1f} |")
    print("\ncommands:")
    for name, command, _, _ in rows:
        print(f"  {name}: {command}")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "generate":
        child_generate(int(sys.argv[2]))
    elif mode == "encode-null":
        child_encode_null(int(sys.argv[2]), int(sys.argv[3]))
    elif mode == "put":
        child_put(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif mode == "get":
        child_get(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif mode == "shell":
        child_shell(sys.argv[2])
    else:
        main()
