# A stand-in for redis:7 from Debian's redis-server (7.0): redis-server and redis-cli on the
# PATH, data in /data, run as the redis user, as compose.yaml uses the official image.
ARG DEBIAN_IMAGE=crewq-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
