# Build stage: the Rust toolchain plus cmake (Pingora's zlib-ng needs it), and for the
# profile-guided build nginx, wrk, h2load, curl and openssl (scripts/build-pgo runs a minute of
# traffic through an instrumented build on loopback, then builds again with its profile:
# about 16% less CPU per cache hit, 9% per pass-through request; bench/notes.md, session
# 36). `--build-arg PGO=0` builds in one pass without it; a profile-guided build that
# fails says so and falls back to that.
FROM rust:1-bookworm AS build
ARG PGO=1
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && if [ "$PGO" = 1 ]; then apt-get install -y --no-install-recommends nginx wrk nghttp2-client curl openssl; fi \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The allocator's settings (jemalloc's slab sizes) are build-time: .cargo/config.toml.
COPY .cargo .cargo
COPY vendor vendor
COPY src src
COPY bench/conf bench/conf
COPY bench/ws-bench bench/ws-bench
COPY bench/packages.sh bench/packages.sh
COPY bench/target-dir.sh bench/target-dir.sh
COPY scripts/build-pgo scripts/build-pgo
RUN if [ "$PGO" = 1 ] && scripts/build-pgo /src/portico; then :; else \
        [ "$PGO" = 1 ] && echo "portico: the profile-guided build failed; building without it" >&2; \
        cargo build --release --bin portico && cp target/release/portico /src/portico; \
    fi

# Runtime stage: a small Debian with a non-root user. conf/ and rules/ are copied in and
# can be replaced by mounting /etc/portico.
FROM debian:bookworm-slim
# The system roots, for verifying origins' TLS certificates (groups without `ca_file`).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin portico
COPY --from=build /src/portico /usr/local/bin/portico
COPY conf/portico.yaml /etc/portico/portico.yaml
COPY rules /etc/portico/rules
RUN sed -i 's|^rules_dir: .*|rules_dir: rules|; s|address: 127.0.0.1:8080|address: 0.0.0.0:8080|' /etc/portico/portico.yaml
USER portico
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/portico"]
# `docker run -p 8080:8080 portico`: the demo, with its sample origin inside the container
# (127.0.0.1:8081) and the edge on the node file's listener, 0.0.0.0:8080 (set above).
# `docker run ... portico run -c /etc/portico/portico.yaml` runs the edge alone;
# `docker run ... portico emulate --origin ... --listen 0.0.0.0:8080` puts it before an app.
CMD ["demo", "-c", "/etc/portico/portico.yaml"]
