# Sluice in a container. Build: `docker build -t sluice .`
#
# io_uring needs two things Docker does not give by default: a seccomp profile that allows
# the three io_uring system calls, and a locked-memory limit of at least 512 KiB:
#
#   docker run --security-opt seccomp=deploy/seccomp-io_uring.json --ulimit memlock=-1 \
#       -p 8080:8080 sluice                                   # in memory
#   docker run ... -v sluice-data:/data sluice --local-root /data   # on a volume
#
# Without them Sluice exits at start with one line saying which is missing.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
# curl for the health check; ca-certificates for S3 over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin sluice \
    && mkdir -p /data && chown sluice:sluice /data
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
USER sluice
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["sluice", "--host", "0.0.0.0", "--port", "8080"]
