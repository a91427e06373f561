# syntax=docker/dockerfile:1
# Multi-stage: build wheels with the compiler available, run on a slim image as a non-root user.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY referral ./referral
# The build backend comes from pip's isolated build environment. What the venv was born with
# (an old setuptools, and pip) is not needed to run and is removed rather than shipped.
RUN pip install --no-cache-dir ./ \
    && python -m pip uninstall --yes setuptools pip

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REFERRAL_ENV=production \
    REFERRAL_POLICIES_DIR=/app/policies \
    REFERRAL_ALEMBIC_INI=/app/alembic.ini \
    REFERRAL_VAR_DIR=/app/var \
    REFERRAL_DATABASE_URL=sqlite+aiosqlite:////app/var/referral.db
# The base image's own installer (pip, and an old setuptools) serves nothing at run time
# (the venv does not see it) and is removed rather than shipped.
RUN python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 referral \
    && useradd --system --uid 10001 --gid referral --home-dir /app --shell /usr/sbin/nologin referral
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY policies ./policies
RUN mkdir -p /app/var && chown referral:referral /app/var
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status == 200 else 1)"]
# Migrates to head, then serves. Secrets and REFERRAL_DATABASE_URL come from the environment.
CMD ["referral", "serve", "--migrate", "--host", "0.0.0.0", "--port", "8000"]
