# Nimbus server image: `docker build -t nimbus .`, then
#   docker run -p 8080:8080 -v nimbus-data:/data nimbus
# (SQLite and local files in the /data volume; set NIMBUS_DATABASE_URL, NIMBUS_REDIS_URL
# and a shared NIMBUS_SECRET to run several replicas — see docker-compose.yml).

FROM rust:1-bookworm AS builder
WORKDIR /src

# Dependencies first, in a layer of their own: built against a stub crate, they stay
# cached until Cargo.toml or Cargo.lock change, so editing src/ rebuilds only Nimbus.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

COPY . .
# COPY keeps the sources' modification times, which can be older than the stub build:
# touch the crate roots so that cargo rebuilds Nimbus itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -m 0755 target/release/nimbus /usr/local/bin/nimbus

FROM debian:bookworm-slim
# Unpinned on purpose: ca-certificates should be the point release's current one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 nimbus \
 && useradd --system --uid 10001 --gid nimbus --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin nimbus \
 && mkdir /data \
 && chown nimbus:nimbus /data
COPY --from=builder /usr/local/bin/nimbus /usr/local/bin/nimbus

ENV NIMBUS_DATA_DIR=/data \
    NIMBUS_LISTEN=0.0.0.0:8080
VOLUME /data
WORKDIR /data
# Numeric, so that orchestrators (Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001
EXPOSE 8080

# No curl in the image: bash (always in Debian) speaks HTTP over /dev/tcp. Healthy means
# GET /health answers 200, i.e. the database, bus and file storage are all up.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\"${NIMBUS_LISTEN##*:}\" && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [[ $status == 200 ]]"]

ENTRYPOINT ["nimbus"]
CMD ["serve"]
