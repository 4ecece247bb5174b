# secrets-agent as a sidecar container image.
FROM python:3.11-slim

# A dedicated unprivileged user; the agent needs no capabilities.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin agent

WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER 10001:10001

# The agent listens on 127.0.0.1:2773 (AWS Secrets Manager Agent's port). It is
# deliberately not EXPOSEd: co-located containers share the pod/task network
# namespace and reach it on loopback. Use a Unix socket on a shared volume
# (server.unix_socket) to serve other containers without any TCP exposure.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:2773/ping', timeout=2).read() != b'healthy')"]

ENTRYPOINT ["secrets-agent", "run"]
