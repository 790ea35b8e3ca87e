# syntax=docker/dockerfile:1
# One image for every role: FOUNTAIN_ROLE picks which ones this container serves.

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN cargo build --release --locked && cp target/release/fountain /usr/local/bin/fountain

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/fountain --create-home --shell /usr/sbin/nologin fountain
COPY --from=build /usr/local/bin/fountain /usr/local/bin/fountain
USER fountain
WORKDIR /var/lib/fountain
# Listen on the container's interfaces; keep data in the volume. Secrets never come from here:
# mount them as files and name them with *_FILE / *_file settings.
ENV FOUNTAIN_SERVER__HOST=0.0.0.0 \
    FOUNTAIN_DATA__DIR=/var/lib/fountain/data \
    FOUNTAIN_ROLE=all
VOLUME ["/var/lib/fountain"]
EXPOSE 8000 8001 8002 8003 8004 8005 8006
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fountain"]
CMD ["serve"]
