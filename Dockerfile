# Multi-stage build of the tokenboard binary with the web console embedded.
#   docker build -t tokenboard .
#   docker run -p 8317:8317 -v tokenboard-data:/data tokenboard
# The first start prints an admin token once (docker logs); or pass -e TOKENBOARD_ADMIN_TOKEN=...

FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/ ./
RUN if [ -f package.json ]; then npm ci --no-audit --no-fund && npm run build; fi

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
COPY --from=web /src/web/dist/ web/dist/
RUN cargo build --release --locked -p tokenboard-server

FROM debian:bookworm-slim
RUN useradd --system --home /data --shell /usr/sbin/nologin tokenboard \
    && mkdir -p /data && chown tokenboard /data
COPY --from=build /src/target/release/tokenboard /usr/local/bin/tokenboard
USER tokenboard
ENV TOKENBOARD_DATA_DIR=/data TOKENBOARD_BIND=0.0.0.0
VOLUME /data
EXPOSE 8317
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8317 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '\"ok\"' <&3"]
ENTRYPOINT ["/usr/local/bin/tokenboard"]
CMD ["serve"]
