"""Configuration: what to watch (SeriesSelector), how to model it (DetectorSpec),
and where things live (Settings).

Settings come from environment variables (prefix ``CRICKET_``) and an optional TOML
file named by ``CRICKET_CONFIG`` (default ``cricket.toml`` in the working directory).
Secrets are ``SecretStr``: they never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cricket.errors import CricketValueError

Aggregate = Literal["mean", "median", "max", "min", "first", "last", "sum"]

# Identifiers (measurement, field, tag keys) are quoted and escaped by the sources, so
# almost anything is allowed; control characters are refused because no sane metric has
# them and they are the usual carrier of protocol injection.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"10s"``, ``"5min"``, ``"1h"``, ``"7d"``, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    text = str(value).strip()
    # pandas is retiring the lower-case day unit ("7d"); people write it, so accept it.
    text = re.sub(r"(?<=\d)\s*d(?![a-z])", "D", text)
    try:
        td = pd.Timedelta(text)
    except (ValueError, TypeError) as exc:
        raise CricketValueError(
            f"cannot read {value!r} as a duration: write it like '10s', '5min', '1h' or '7d'"
        ) from exc
    if pd.isna(td):
        raise CricketValueError(f"cannot read {value!r} as a duration: write it like '10s' or '1h'")
    return td.to_pytimedelta()


def _check_identifier(kind: str, value: str) -> str:
    if not value:
        raise ValueError(f"{kind} must not be empty")
    if _CONTROL.search(value):
        raise ValueError(
            f"{kind} {value!r} contains a control character (newline, tab, NUL...): "
            "metric names never do; check the selector"
        )
    return value


class SeriesSelector(BaseModel):
    """Which series to read and how to make them regular.

    One selector matches one series per distinct combination of the ``group_by`` tag
    values, e.g. ``waveform.value{host=cricket001}``.
    """

    model_config = ConfigDict(extra="forbid")

    measurement: str = Field("waveform", description="InfluxDB measurement")
    field: str = Field("value", description="numeric field to read")
    tags: dict[str, str] = Field(
        default_factory=dict, description="tag filters, matched exactly (tag = value)"
    )
    group_by: list[str] = Field(
        default_factory=lambda: ["host"], description="tags whose values name a series"
    )
    every: timedelta = Field(
        timedelta(seconds=10), description="resample interval, e.g. '10s' or '1min'"
    )
    aggregate: Aggregate = Field("mean", description="aggregate within each interval")
    start: datetime | None = Field(None, description="range start (UTC), inclusive")
    stop: datetime | None = Field(None, description="range stop (UTC), exclusive")

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, v: object) -> timedelta:
        td = parse_duration(v)  # type: ignore[arg-type]
        if td <= timedelta(0):
            raise ValueError("every must be a positive duration such as '10s'")
        return td

    @field_validator("measurement", "field")
    @classmethod
    def _ident(cls, v: str, info) -> str:  # noqa: ANN001
        return _check_identifier(info.field_name, v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key, val in v.items():
            _check_identifier("tag key", key)
            if _CONTROL.search(val):
                raise ValueError(f"tag value {val!r} for {key!r} contains a control character")
        return v

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str]) -> list[str]:
        for key in v:
            _check_identifier("group_by tag", key)
        return v

    @model_validator(mode="after")
    def _range(self) -> SeriesSelector:
        if self.start is not None and self.stop is not None and self.start >= self.stop:
            raise ValueError(
                f"start {self.start.isoformat()} is not before stop {self.stop.isoformat()}: "
                "swap them or fix the range"
            )
        return self


class DetectorSpec(BaseModel):
    """How a waveform detector is built. One configuration for every series."""

    model_config = ConfigDict(extra="forbid")

    segment_len: int = Field(32, ge=4, description="samples per segment (even)")
    train_slide: int = Field(2, ge=1, description="training segments slide by this many samples")
    n_clusters: int = Field(250, ge=1, description="shapes in the library (k of k-means)")
    n_init: int = Field(1, ge=1, description="k-means restarts")
    algorithm: Literal["auto", "kmeans", "minibatch"] = "auto"
    random_state: int | None = 0
    holdout_fraction: float = Field(
        0.3, gt=0, lt=1, description="tail of the training data kept back to set the threshold"
    )
    threshold_quantile: float = Field(
        0.99999,
        gt=0,
        lt=1,
        description=(
            "a point is anomalous when an error this rare (per point, on held-out data) is "
            "exceeded; 0.99999 means about one false point per 100,000 scored"
        ),
    )
    min_event_gap: int = Field(
        16, ge=0, description="anomalous stretches closer than this many samples merge into one event"
    )
    short_gap: int = Field(
        3, ge=0, description="gaps of at most this many missing steps are interpolated"
    )
    period_scale: bool = Field(
        True,
        description=(
            "also learn a second library whose segments span the series' dominant period "
            "(found by autocorrelation at fit time); the score takes the more surprising scale"
        ),
    )
    max_period: int = Field(
        512, ge=8, description="longest period (in samples) the period scale may use"
    )
    calibration_crossfit: bool = Field(
        True,
        description=(
            "also calibrate the base scale on out-of-sample errors from the start of the "
            "history: a second library fitted on its end rebuilds its start (one more "
            "k-means fit; the held-out tail alone is too short for real metrics' bursts)"
        ),
    )

    @field_validator("segment_len")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"segment_len must be even (got {v}): reconstruction hops by n/2")
        return v


def spec_default(name: str) -> object:
    """The default of ``DetectorSpec.<name>``: the one place detector defaults live (the
    CLI, the flows and ``ShapeLibrary`` read them from here)."""
    return DetectorSpec.model_fields[name].default


def sqlite_uri(path: Path) -> str:
    """``sqlite:///<path>`` for any path: ``%`` and ``?`` (which the URL parser would
    decode or take for options) are percent-encoded; spaces, ``#`` and unicode are kept."""
    return "sqlite:///" + str(path).replace("%", "%25").replace("?", "%3F")


def sqlite_path(uri: str) -> Path:
    """The database file of a ``sqlite:///`` URI (inverse of :func:`sqlite_uri`)."""
    from urllib.parse import unquote

    return Path(unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))


def default_state_dir() -> Path:
    """``$CRICKET_STATE_DIR``, else ``$XDG_DATA_HOME/cricket`` (``~/.local/share/cricket``):
    one place whatever the working directory, so cron, systemd and a shell share it."""
    explicit = os.environ.get("CRICKET_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return (Path(data_home).expanduser() / "cricket").absolute()


#: the ecosystem's own variables, honoured when the CRICKET_* one is not set
ECOSYSTEM_ENV = {
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "influx_url": "INFLUXDB_V2_URL",
    "influx_token": "INFLUXDB_V2_TOKEN",
    "influx_org": "INFLUXDB_V2_ORG",
}


class EcosystemEnvSource(PydanticBaseSettingsSource):
    """``MLFLOW_TRACKING_URI`` and influxdb-client's ``INFLUXDB_V2_URL/_TOKEN/_ORG``,
    below the ``CRICKET_*`` variables and above the TOML file."""

    def get_field_value(self, field, field_name):  # noqa: ANN001, ANN201
        return os.environ.get(ECOSYSTEM_ENV.get(field_name, "")) or None, field_name, False

    def __call__(self) -> dict[str, object]:
        return {name: os.environ[var] for name, var in ECOSYSTEM_ENV.items()
                if os.environ.get(var)}


class ConfigFileError(CricketValueError):
    """The TOML configuration file cannot be read."""


class CheckedTomlSource(TomlConfigSettingsSource):
    """The TOML file; a malformed file is refused with its name and the line at fault."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        import tomllib

        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigFileError(
                f"the configuration file {path.absolute()} is not valid TOML ({exc}): fix that "
                "line, or point CRICKET_CONFIG at another file"
            ) from None
        super().__init__(settings_cls, toml_file=path)


class Settings(BaseSettings):
    """Every setting of Cricket, from ``CRICKET_*`` environment variables or a TOML file.

    The TOML file is ``$CRICKET_CONFIG`` or ``./cricket.toml``; environment variables win.
    """

    model_config = SettingsConfigDict(
        env_prefix="CRICKET_", extra="ignore", toml_file=None, validate_default=True
    )

    state_dir: Path = Field(default_factory=default_state_dir, description="local state folder")

    # InfluxDB
    influx_url: str = Field("http://127.0.0.1:8086", description="InfluxDB base URL")
    influx_source: Literal["influxql", "flux"] = Field(
        "influxql", description="influxql: 1.x, 2.x (v1 compat), 3.x; flux: 2.x native"
    )
    influx_database: str = Field("cricket", description="database (1.x/3.x, 2.x v1 compat)")
    influx_bucket: str | None = Field(None, description="bucket (2.x Flux); defaults to database")
    influx_org: str | None = Field(None, description="organisation (2.x Flux)")
    influx_token: SecretStr | None = Field(None, description="API token (2.x / 3.x)")
    influx_username: str | None = Field(None, description="user name (1.x auth)")
    influx_password: SecretStr | None = Field(None, description="password (1.x auth)")
    influx_timeout_s: float = Field(30.0, gt=0, description="HTTP timeout per request")
    influx_retries: int = Field(3, ge=0, description="retries on connection errors and 5xx")
    influx_write_batch: int = Field(5000, ge=1, description="points per write request")
    influx_read_chunk: timedelta = Field(
        timedelta(hours=24), description="long reads are split into chunks this long"
    )
    influx_score_database: str | None = Field(
        None, description="where scores and events go; defaults to influx_database"
    )

    # MLflow
    mlflow_tracking_uri: str | None = Field(
        None, description="tracking URI; default sqlite:///<state_dir>/mlflow.db"
    )
    model_name: str = Field("cricket-waveform", description="registered model name")
    mlflow_ui_url: str | None = Field(
        None,
        description="where people open MLflow in a browser (report links point there); "
        "default the tracking URI when it is a server, else http://127.0.0.1:5000 "
        "(`mlflow ui --backend-store-uri <tracking URI>`)",
    )

    # Pipeline
    report_dir: Path | None = Field(None, description="HTML reports; default <state_dir>/reports")
    dask_address: str | None = Field(None, description="Dask scheduler address for scale-out")
    task_runner: Literal["threads", "processes"] = Field(
        "threads", description="without a Dask address: batch tasks on threads of the flow's "
        "process, or on a pool of processes started for each flow run")
    batch_size: int = Field(100, ge=1, description="series per task")
    model_cache_versions: int = Field(
        3, ge=0, description="models kept decoded in <state_dir>/model-cache for scoring "
        "(each about twice its arrays.npz; 0: no cache)")

    # Alerts
    alert_webhook_url: SecretStr | None = Field(
        None, description="built-in alert route: POST JSON here (a secret, never logged)"
    )
    alert_webhook_timeout_s: float = Field(10.0, gt=0, description="alert webhook timeout")
    alert_webhook_retries: int = Field(3, ge=0, description="alert webhook retries")
    alert_group_by: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="tags whose shared values group events into one incident "
        "(comma-separated; empty: the whole fleet is one group; 'series': per series)",
    )
    alert_slack: timedelta = Field(
        timedelta(minutes=5), description="events this close in time join one incident"
    )
    alert_report_url: str | None = Field(
        None, description="base URL where reports are served (links in notifications)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("CRICKET_CONFIG", "cricket.toml"))
        sources: list[PydanticBaseSettingsSource] = [
            init_settings, env_settings, EcosystemEnvSource(settings_cls)
        ]
        if toml_path.is_file():
            sources.append(CheckedTomlSource(settings_cls, toml_path))
        return tuple(sources)

    @field_validator("influx_read_chunk", mode="before")
    @classmethod
    def _chunk(cls, v: object) -> timedelta:
        return parse_duration(v)  # type: ignore[arg-type]

    @field_validator("alert_slack", mode="before")
    @classmethod
    def _slack(cls, v: object) -> timedelta:
        return parse_duration(v)  # type: ignore[arg-type]

    @field_validator("alert_group_by", mode="before")
    @classmethod
    def _group_by(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("state_dir", "report_dir", mode="after")
    @classmethod
    def _abs(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser().absolute()

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI, always absolute."""
        if self.mlflow_tracking_uri:
            uri = self.mlflow_tracking_uri
            if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
                return sqlite_uri(sqlite_path(uri).absolute())
            if "://" not in uri:
                return Path(uri).absolute().as_uri()
            return uri
        return sqlite_uri(self.state_dir / "mlflow.db")

    @property
    def ui_url(self) -> str:
        """The MLflow UI people open in a browser (see ``mlflow_ui_url``)."""
        if self.mlflow_ui_url:
            return self.mlflow_ui_url.rstrip("/")
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return "http://127.0.0.1:5000"

    @property
    def reports_path(self) -> Path:
        return self.report_dir or self.state_dir / "reports"

    @property
    def bucket(self) -> str:
        return self.influx_bucket or self.influx_database

    @property
    def score_database(self) -> str:
        return self.influx_score_database or self.influx_database

    def public_dict(self) -> dict[str, object]:
        """Settings safe to log or record: secrets replaced by whether they are set."""
        out: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr) or name in {
                "influx_token", "influx_password", "alert_webhook_url"
            }:
                out[name] = "set" if value else "unset"
            else:
                out[name] = str(value) if isinstance(value, Path | timedelta) else value
        return out
