# dedup serve: the HTTP API of a saved index (see README, "Running the service").
#   docker build -t dedup .
#   dedup index build ~/photos --to ~/photos.index          # on the host (or in the container)
#   docker run --rm -p 127.0.0.1:8000:8000 -v ~/photos.index:/index -e DEDUP_TOKEN=secret dedup
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY dedup ./dedup
RUN pip install ".[serve]" && rm -rf /src

RUN useradd --create-home --uid 10001 dedup
USER dedup
WORKDIR /home/dedup

# The index folder (written by `dedup index build`), mounted read-write: keypoints live in it.
VOLUME ["/index"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"

# Inside the container the server must listen on every interface for -p to reach it; publish the port on
# the host's loopback (-p 127.0.0.1:8000:8000) unless other machines should reach it, and set DEDUP_TOKEN.
ENTRYPOINT ["dedup", "serve", "--index", "/index", "--host", "0.0.0.0", "--port", "8000"]
