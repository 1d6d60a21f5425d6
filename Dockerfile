# syntax=docker/dockerfile:1.6
# The `stuckless` binary: worker and operator CLI in one slim image.
#
#   docker build -t stuckless .
#   docker run --rm -e DATABASE_URL=postgres://... -e WAKE_SECRET=... -p 8080:8080 stuckless
#   docker run --rm -e DATABASE_URL=postgres://... stuckless diagnose 42
#
# Stage 1 builds with the full Rust toolchain; stage 2 is Debian slim with
# only the binary, running as a non-root user. TLS uses rustls with bundled
# webpki roots and the Postgres driver speaks TCP itself, so the runtime needs
# no OpenSSL and no CA bundle.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo resolves every member, and the migrations are
# embedded into the binary at compile time (sqlx::migrate!).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p stuckless-cli --bin stuckless \
 && cp target/release/stuckless /usr/local/bin/stuckless

FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin stuckless
COPY --from=build /usr/local/bin/stuckless /usr/local/bin/stuckless
USER 10001
# Cloud Run sets PORT; JSON logs with `severity` suit Cloud Logging.
ENV PORT=8080 \
    LOG_FORMAT=json
EXPOSE 8080
# The binary is PID 1 and handles SIGTERM itself (graceful drain, release,
# deregister, exit 0), so no init shim is needed.
ENTRYPOINT ["/usr/local/bin/stuckless"]
CMD ["worker"]
