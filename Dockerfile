# opsdb runtime image: opsdb + PostgreSQL client tools for each supported major version.
# pg/tools.py picks /usr/lib/postgresql/<server major>/bin for the server it talks to.
# Build: docker build -t opsdb:0.1.0 .   Run: docker run --rm -v /etc/opsdb:/etc/opsdb:ro opsdb:0.1.0 check
FROM python:3.11.10-slim-bookworm

ARG PG_MAJORS="14 15 16 17"

# PostgreSQL's own apt repository (PGDG) carries every supported major's client package for bookworm.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    pkgs=""; for v in $PG_MAJORS; do pkgs="$pkgs postgresql-client-$v"; done; \
    apt-get install -y --no-install-recommends $pkgs zstd; \
    apt-get purge -y curl gnupg; apt-get autoremove -y; \
    rm -rf /var/lib/apt/lists/*

# pg_basebackup, pg_dump, pg_restore, pg_verifybackup and pg_amcheck ship in postgresql-client-N.
WORKDIR /src
# dependencies pinned and hash-checked from the lock (scripts/lock.sh refreshes it), then opsdb alone
COPY requirements/runtime.lock ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY opsdb ./opsdb
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && rm -rf /src

RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/opsdb opsdb \
    && install -d -o opsdb -g opsdb /var/lib/opsdb/repo /var/spool/opsdb /etc/opsdb
USER opsdb
WORKDIR /var/lib/opsdb
ENTRYPOINT ["opsdb"]
CMD ["--help"]
