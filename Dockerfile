# syntax=docker/dockerfile:1
# One image for every role: FOUNTAIN_ROLE picks which ones a container serves.
#
#   docker build -t fountain .
#   docker run -e FOUNTAIN_ROLE=kms -v /path/master.key:/run/secrets/master.key:ro ... fountain
#
# The build stage copies exactly what Cargo.toml and the sources need (a test builds from the
# files these COPY lines name, so a missing one fails CI rather than `docker build`).

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
# Cargo.toml declares the benchmarks by name: the manifest does not load without their files,
# though the release build does not compile them. (The integration tests are declared by an
# explicit path, which cargo only needs when it builds them: tests/ stays out of the image.)
COPY benches ./benches
RUN cargo build --release --locked
RUN install -m 0755 target/release/fountain /usr/local/bin/fountain

# The runtime: glibc, libpq and CA roots, nothing else (no shell tools are needed: the health
# check is the binary itself).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fountain \
    && useradd --system --uid 10001 --gid 10001 --home /var/lib/fountain --create-home \
       --shell /usr/sbin/nologin fountain
COPY --from=build /usr/local/bin/fountain /usr/local/bin/fountain
USER 10001:10001
WORKDIR /var/lib/fountain
# Listen on the container's interfaces; keep data in the volume. Secrets never come from here:
# they are files — the master key (FOUNTAIN_MASTER_KEY_FILE), each role's credential
# (FOUNTAIN_SECURITY__CREDENTIALS_DIR/<role>.key) and the database password
# (FOUNTAIN_DATABASE__PASSWORD_FILE) — mounted as Docker secrets under /run/secrets
# (docker-compose.yml). Unset, an all-in-one container generates them in its volume.
ENV FOUNTAIN_SERVER__HOST=0.0.0.0 \
    FOUNTAIN_DATA__DIR=/var/lib/fountain/data \
    FOUNTAIN_ROLE=all
# glibc keeps each thread's arena at its high-water mark; the search role's indexing threads would
# hold ~50 MB that way. Two arenas and large blocks returned to the system keep RSS near what is in
# use (bench/README.md, search: 97 MB -> 50 MB with 100k documents, same speed).
ENV GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072
VOLUME ["/var/lib/fountain"]
EXPOSE 8000 8001 8002 8003 8004 8005 8006
# GET /health of the roles FOUNTAIN_ROLE selects, on their configured ports.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/fountain", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fountain"]
CMD ["serve"]
