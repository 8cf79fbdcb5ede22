# respawn: receiver, API, admin UI and embedded dispatcher under gunicorn.
# Build: docker build -t respawn .
# Run:   docker run -p 8000:8000 -e RESPAWN_SECRET_KEY_FILE=/run/secrets/key \
#          -e RESPAWN_CALLBACK_TOKENS_FILE=/run/secrets/tokens -e RESPAWN_DATABASE_URL=... respawn
# Migrations are a separate step (`docker run ... respawn db upgrade`), never retried in a
# loop at start-up.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes -r requirements.txt
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RESPAWN_BIND=0.0.0.0:8000 \
    RESPAWN_POLICY_FILE=/app/policy.yaml \
    RESPAWN_DATABASE_URL=sqlite:////app/instance/respawn.db \
    RESPAWN_SPOOL_DIR=/app/instance/spool
RUN groupadd --system --gid 10001 respawn \
 && useradd --system --uid 10001 --gid respawn --home-dir /app --shell /usr/sbin/nologin respawn
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY migrations ./migrations
COPY policy.yaml ./policy.yaml
RUN mkdir -p /app/instance && chown respawn:respawn /app/instance
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["respawn"]
CMD ["serve"]
