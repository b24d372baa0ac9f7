# syntax=docker/dockerfile:1
# reminderctl in a container: built with the toolchain image, run from Debian slim as a user
# that is not root. The default command is the foreground loop, one pass a minute:
#
#   docker build -t reminderctl .
#   docker run -d --name reminderctl --env-file .env -v reminderctl-data:/data reminderctl
#   docker run --rm --env-file .env -v reminderctl-data:/data reminderctl reminderctl status
#
# Give another command to run something else (`reminderctl run` for one pass, as a cron job
# calls it). With the default DATABASE_URL the SQLite file lives in the /data volume; set
# DATABASE_URL=postgres://… to use PostgreSQL (see docker-compose.yml).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
COPY . .
# `cargo build --release --locked` is the build `.ci/run` runs: the committed Cargo.lock, never
# updated. The caches keep the registry and the build output between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
 && install -m 0755 target/release/reminderctl /usr/local/bin/reminderctl

FROM debian:${DEBIAN}-slim AS runtime
# ca-certificates for the system's trust store; tini as PID 1, so that SIGTERM (docker stop,
# a redeploy) reaches reminderctl, which then starts no new sends and gives claimed messages
# back. The packages follow the base image's point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 reminderctl \
 && useradd --system --uid 10001 --gid reminderctl --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin reminderctl \
 && mkdir /data \
 && chown reminderctl:reminderctl /data
COPY --from=build /usr/local/bin/reminderctl /usr/local/bin/reminderctl
# The working directory holds the SQLite file (the default `sqlite:reminderctl.db`) and the
# journal of results a database could not take: both must outlive the container.
ENV REMINDER_JOURNAL_DIR=/data/journal
WORKDIR /data
VOLUME ["/data"]
# Numeric, so that a host or orchestrator can see it is not root (runAsNonRoot).
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["reminderctl", "run", "--every", "1m"]
