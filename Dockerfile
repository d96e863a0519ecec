# syntax=docker/dockerfile:1
# One image for every SignalEngine process in docker-compose.yml: the API, the stream,
# the Prefect worker (which runs every flow), and the Prefect and MLflow servers, so all
# of them run exactly the versions pyproject.toml resolves.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SIGNALENGINE_HOME=/opt/signalengine \
    SIGNALENGINE_STATE_DIR=/var/lib/signalengine \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

# libgomp1 is LightGBM's OpenMP runtime; the slim image lacks it. Every other
# dependency ships manylinux wheels (TA-Lib's bundles its C library).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --user-group signalengine \
    && install -d -o signalengine -g signalengine \
        /var/lib/signalengine /var/lib/signalengine/mlflow-artifacts

WORKDIR /opt/signalengine

# Dependencies first, read from pyproject.toml itself, so a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The tree stays in SIGNALENGINE_HOME and is installed in place (editable): Prefect
# imports flows by path (prefect.yaml entrypoints, pull step into SIGNALENGINE_HOME) and
# the package data (sql/, api/static, automations.yaml) is read through the one import
# root `signalengine`, so the imported code and those files are one copy.
# Root owns it; the service user can only read it.
COPY . .
RUN pip install --no-deps -e . \
    && signalengine --help >/dev/null

USER signalengine

# 8000: API; 9108: stream metrics; 4200: Prefect server; 5000: MLflow; 8080: worker health.
EXPOSE 8000 9108 4200 5000 8080
ENTRYPOINT ["signalengine"]
CMD ["--help"]
