# Multi-stage build of bo-gateway: a Rust builder, then a small non-root runtime.
# (Docker cannot run on the project's build machine, so this file is kept simple and is not
# exercised by CI; build it with `docker build -t bo-gateway .`.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin bo-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/bo-gateway /usr/local/bin/bo-gateway
# Mount the config (gateway.toml, users.toml) at /etc/bo-gateway and the certificates and keys
# at /etc/bo-gateway/certs; paths in the config are relative to the working directory.
WORKDIR /etc/bo-gateway
USER nonroot
EXPOSE 8443 9901
ENTRYPOINT ["/usr/local/bin/bo-gateway"]
CMD ["--config", "/etc/bo-gateway/gateway.toml", "--log-format", "json"]
