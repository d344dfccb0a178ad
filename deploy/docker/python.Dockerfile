# A stand-in for python:3.12-slim from Debian's packages (Python 3.11, which crewq allows):
# python, pip and venv, and nothing that compiles. pip may install outside Debian's own
# packages here, as in the official image: the Dockerfile's builder installs uv with it.
ARG DEBIAN_IMAGE=crewq-base/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-pip python3-venv ca-certificates passwd \
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.*/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip
# uv (the Dockerfile's builder) trusts the system's certificates, as pip does, not only
# its bundled ones: the machine's authorities above included.
ENV UV_SYSTEM_CERTS=1
CMD ["python3"]
