# palaver: build the server and the demo chat, ship them in a small image that runs as a non-root user.
#   docker build -t palaver .
#   docker run -p 3000:3000 palaver              # SQLite in /var/lib/palaver, demo chat at /
# `docker stop` sends SIGTERM: palaver refuses new connections, closes its sockets and gives pending writes
# PALAVER_SHUTDOWN_GRACE (10 s) to commit, so give it longer than that (`docker stop -t 20`; docker-compose.yml's
# stop_grace_period). docker-compose.yml runs two of these behind nginx (docs/deployment.md).

FROM rust:1.95-slim-bookworm AS server
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked --bin palaver

FROM node:20-bookworm-slim AS demo
WORKDIR /src/client-js
COPY client-js/package.json client-js/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY client-js/ ./
RUN npm run build:demo

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/palaver --create-home palaver
COPY --from=server /src/target/release/palaver /usr/local/bin/palaver
COPY --from=demo /src/client-js/demo/dist /usr/share/palaver/demo
USER palaver
WORKDIR /var/lib/palaver
ENV PORT=3000 \
    PALAVER_STATIC_DIR=/usr/share/palaver/demo \
    DATABASE_URL=sqlite:///var/lib/palaver/palaver.db
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/palaver"]
