# Multi-stage build of the three binaries: order-service, outbox-relay, shipment-service.
# docker compose picks the binary per service with `command:`.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY crates ./crates
COPY resources ./resources
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p order-service -p outbox-relay -p shipment-service --bins \
 && mkdir -p /out \
 && cp target/release/order-service target/release/outbox-relay target/release/shipment-service /out/

FROM debian:bookworm-slim AS runtime
# curl is for the compose health checks; ca-certificates for TLS connections to managed servers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home outbox
COPY --from=builder /out/ /usr/local/bin/
COPY resources /opt/outbox/resources
USER outbox
ENV RUST_LOG=info
CMD ["order-service"]
