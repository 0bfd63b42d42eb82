"""Optional MLflow tracking: parameters, metrics and the report of an evaluation.

Active only when ``tracking.mlflow_uri`` is set; mlflow is imported only then (install
it with ``pip install 'movierec[mlflow]'``).
"""

from __future__ import annotations

from pathlib import Path

from movierec.config import Config
from movierec.errors import ConfigError


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def metrics_of(result: dict) -> dict[str, float]:
    """Numeric metrics: the model's, then ``baseline.<name>.<metric>``, ``ablation.…``, ``group.…``."""
    out = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for section in ("baselines", "ablations", "groups"):
        for name, m in (result.get(section) or {}).items():
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    safe = "".join(c if c.isalnum() or c in "._-/ " else "_" for c in f"{section[:-1]}.{name}.{k}")
                    out[safe] = float(v)
    return out


def log_evaluation(cfg: Config, result: dict, report_dir: str | Path | None = None) -> str | None:
    """Log one MLflow run; returns its id (None when tracking is off)."""
    if not cfg.tracking.mlflow_uri:
        return None
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError("tracking.mlflow_uri is set but mlflow is not installed "
                          "(pip install 'movierec[mlflow]')") from exc
    mlflow.set_tracking_uri(cfg.tracking.mlflow_uri)
    mlflow.set_experiment(cfg.tracking.experiment)
    with mlflow.start_run(run_name=str(result.get("model_version") or "movierec")) as run:
        mlflow.log_params(_flatten(cfg.to_dict()))
        mlflow.log_metrics(metrics_of(result))
        if report_dir is not None and Path(report_dir).is_dir():
            mlflow.log_artifacts(str(report_dir), artifact_path="report")
        return run.info.run_id
