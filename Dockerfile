# One image for every apiplus worker; the command chooses the service:
#   docker run apiplus ingest run | dispatch run | billing run | dispatch simulator
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY apiplus ./apiplus
COPY services ./services
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 apiplus
COPY --from=build /install /usr/local
COPY schemas /opt/apiplus/schemas
ENV APIPLUS_SCHEMAS_DIR=/opt/apiplus/schemas \
    PYTHONUNBUFFERED=1
USER apiplus
EXPOSE 9101 9102 9103 18080
ENTRYPOINT ["apiplus"]
CMD ["ingest", "run"]
