# pubsubd in a scratch image: one static, stripped binary and nothing else.
#
#   docker build -t pubsubd .
#   docker run --rm -p 8080:8080 pubsubd
#   docker run --rm -p 8080:8080 -e PUBSUBD_API_KEY=k1 -e PUBSUBD_HISTORY=500 pubsubd
#
# Every setting comes from the environment (PUBSUBD_*, see `pubsubd --help`) or
# from flags after the image name. `docker stop` sends SIGTERM: WebSocket
# clients get server_shutdown and close 1001, then the process exits 0 (give
# --stop-timeout more than PUBSUBD_SHUTDOWN_TIMEOUT, default 5 s).
# scripts/scratch-check.sh builds the same binary and runs it in an empty root,
# for machines without Docker.

FROM rust:1-bookworm AS build
WORKDIR /src
# glibc, linked statically. getrandom must call glibc's getrandom() directly:
# its default looks the function up with dlsym (absent in a static binary) and
# falls back to /dev/urandom, which scratch does not have.
ENV RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_LTO=true \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1

# Dependencies first, in their own layer, so source edits rebuild only pubsubd.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && rm -rf src

COPY src ./src
# The placeholder build left fresher artifacts for pubsubd itself: invalidate them.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/pubsubd /pubsubd \
 && strip /pubsubd \
 && /pubsubd --help > /dev/null \
 && (ldd /pubsubd 2>&1 || true) | grep -Eq 'not a dynamic executable|statically linked'

FROM scratch
COPY --from=build /pubsubd /pubsubd
USER 65534:65534
ENV PUBSUBD_HOST=0.0.0.0 \
    PUBSUBD_PORT=8080
EXPOSE 8080
# No curl in scratch: the binary checks itself (GET /health on 127.0.0.1:$PUBSUBD_PORT, 2 s timeout).
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s --retries=3 \
    CMD ["/pubsubd", "healthcheck"]
ENTRYPOINT ["/pubsubd"]
