"""MLproject entry point ``scan``: find the phrase in whole recordings with any heardet model.

Scans ``inputs`` (files or directories; a calls folder from ``heardet synth --calls`` is read from
its ``calls/``) per channel, with voice-activity gating, and logs ``scan/events.csv`` (file, channel,
start_s, end_s, score), ``scan/files.csv`` (one row per file), ``scan_x_real_time`` and the param
``threshold_used`` (``threshold`` is as requested, -1 for the model's own). When the
folder holds ``events.json`` it also logs ``event_recall``, ``fa_per_hour``, ``call_macro_f1``,
``onset_median_error_s``, the thresholds for 0.5 / 1 / 5 false accepts per hour
(``threshold_fah_<target>``) and ``plots/det.png`` (miss rate against false accepts per hour).
"""

from __future__ import annotations

from pathlib import Path

import click
import mlflow

from heardet.cli import friendly_errors
from heardet.config import click_options, from_options
from heardet.scan import ScanConfig


@click.command()
@click.option("--model-uri", required=True)
@click.option("--inputs", type=click.Path(path_type=Path), required=True,
              help="A file, a folder of recordings, or a calls folder (calls/ and events.json).")
@click_options(ScanConfig, skip=["batch_size"], defaults={"threshold": -1.0})
@click.option("--target-fah", type=float, default=0.0, show_default=True,
              help="Use the model version's stored threshold for this many FA/h (0: --threshold or the model's).")
@friendly_errors
def main(model_uri: str, inputs: Path, target_fah: float, **options) -> None:
    """Scan INPUTS with MODEL_URI and log the events (and call metrics) to the active MLflow run."""
    import dataclasses

    from heardet.cli import configure_logging, gather_audio
    from heardet.mlops import plots
    from heardet.mlops.scoring import load_model
    from heardet.mlops.tracking import log_params, stage_run
    from heardet.scan import FA_TARGETS, evaluate_calls, events_frame, files_frame, timed_scan
    from heardet.synth.calls import CALLS_DIR, EVENTS_FILE

    configure_logging()
    requested = {k: str(v) for k, v in options.items()}  # as `mlflow run` logged them (-1: the model's own)
    if options.get("threshold") is not None and options["threshold"] < 0:
        options["threshold"] = None  # MLproject has no null: a negative threshold means "the model's own"
    config = from_options(ScanConfig, options)
    if target_fah > 0:
        from heardet.mlops.registry import stored_threshold

        config = dataclasses.replace(config, threshold=stored_threshold(model_uri, target_fah))
    truth = inputs / EVENTS_FILE if inputs.is_dir() and (inputs / EVENTS_FILE).is_file() else None
    files = gather_audio([inputs / CALLS_DIR if truth and (inputs / CALLS_DIR).is_dir() else inputs])
    with stage_run("scan", f"scan {model_uri}"):
        log_params({"model_uri": model_uri, "inputs": str(inputs), "target_fah": target_fah, **requested,
                    "threshold_used": "model's own" if config.threshold is None else config.threshold})
        model = load_model(model_uri)
        evaluation = evaluate_calls(model, files, truth, config) if truth else None
        results, seconds = (evaluation.results, evaluation.seconds) if evaluation else timed_scan(model, files, config)
        events = events_frame(results)
        audio = sum(r.duration_s for r in results)
        mlflow.log_metrics({"scan_x_real_time": audio / max(seconds, 1e-9), "scan_audio_hours": audio / 3600,
                            "scan_windows_scored": sum(r.scored for r in results),
                            "scan_windows": sum(r.windows for r in results),
                            "scan_unreadable_files": sum(bool(r.error) for r in results)})
        mlflow.log_text(events.to_csv(index=False), "scan/events.csv")
        mlflow.log_text(files_frame(results).to_csv(index=False), "scan/files.csv")
        if evaluation is not None:
            m = evaluation.metrics
            mlflow.log_metrics({k: v for k, v in {
                "event_recall": m.event_recall, "fa_per_hour": m.fa_per_hour, "false_accepts": m.false_accepts,
                "call_macro_f1": m.call_f1, "onset_median_error_s": m.onset_error_s}.items() if v is not None})
            for target in FA_TARGETS:
                threshold = evaluation.operating_points[target]
                if threshold is not None:
                    mlflow.log_metric(f"threshold_fah_{target:g}".replace(".", "_"), threshold)
            points = evaluation.points
            mlflow.log_figure(plots.det([p.fa_per_hour for p in points], [1 - p.event_recall for p in points],
                                        model_uri), "plots/det.png")
            click.echo(evaluation.render())
        click.echo(f"{len(events)} events in {len(results)} files, {audio / 3600:.2f} h, "
                   f"{audio / max(seconds, 1e-9):.0f}× real time")


if __name__ == "__main__":
    main()
