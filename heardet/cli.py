"""The ``heardet`` command line: ``heardet --help`` lists the commands."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

import click

from heardet.config import click_options, from_options
from heardet.data import DataError
from heardet.scan import ScanConfig, evaluate_calls
from heardet.synth.config import SynthConfig

logger = logging.getLogger("heardet")


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Send heardet's log records to stderr; libraries never configure logging themselves."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("heardet").setLevel(level)


def friendly_errors(command):
    """Decorator for entry points: a bad input or an unavailable model ends the command with
    its message (exit 1) instead of a stack trace; the trace is logged at DEBUG level."""
    import functools

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from heardet.audio import AudioError
        from heardet.whisper.hub import ModelUnavailableError

        try:
            return command(*args, **kwargs)
        except (DataError, AudioError, ModelUnavailableError, ValueError) as exc:
            logger.debug("failed", exc_info=True)
            raise click.ClickException(str(exc)) from exc

    return wrapper


def data_option(command):
    """``--data DIR``: the dataset every training and scoring entry point reads."""
    return click.option("--data", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
                        help="Dataset directory (wav_train/, wav_test/, word_bounds.json).")(command)


def out_option(command):
    """``--out DIR``: where submission CSVs are written."""
    return click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True,
                        help="Directory for the submission CSV.")(command)


EXIT_OK, EXIT_UNREADABLE, EXIT_USAGE = 0, 1, 2  # predict, transcribe, evaluate (README: Command line)


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with status 2 (usage error or nothing to do)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def gather_audio(inputs) -> list[Path]:
    """The audio files INPUTS name, checked before any model is loaded.

    Exits 2 when a path does not exist or no audio file is found; warns about a directory
    with no audio among others that have some.
    """
    from heardet.audio import AUDIO_EXTENSIONS
    from heardet.mlops.scoring import collect_files, empty_directories

    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing:
        fail(f"no such file or directory: {', '.join(missing)}")
    files = collect_files(inputs)
    if not files:
        fail(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    for directory in empty_directories(inputs):
        logger.warning("%s holds no audio files (%s)", directory, ", ".join(AUDIO_EXTENSIONS))
    return files


def open_model(model_uri: str):
    """Load ``model_uri``, through the tracking store of ``heardet --tracking-uri`` when the URI
    needs one (``models:/``, ``runs:/``); exits 2 when the store or the model cannot be had."""
    from heardet.mlops.scoring import load_model
    from heardet.mlops.store import StoreError, needs_store, use_store

    explicit = click.get_current_context().find_root().params.get("tracking_uri")
    try:
        if explicit or needs_store(model_uri):
            use_store(explicit)
        return load_model(model_uri)
    except (StoreError, DataError) as exc:
        fail(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--tracking-uri", metavar="URI",
              help="MLflow tracking store of models:/ and runs:/ URIs, or the path of an mlflow.db "
                   "[default: MLFLOW_TRACKING_URI, else the mlflow.db in this folder or a parent].")
def main(verbose: int, quiet: bool, tracking_uri: str | None) -> None:
    """heardet: detect a spoken phrase (default «не слышу») in audio recordings.

    predict, transcribe and evaluate exit 0 when every input was scored, 1 when some could
    not be read (the rest are scored and written), 2 on a usage error or when there is
    nothing to do (a missing path, no audio files, an unknown model).
    """
    configure_logging(verbose, quiet)


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def validate(data_dir: Path, no_progress: bool) -> None:
    """Check DATA_DIR (wav_train/, wav_test/, word_bounds.json) and print a report.

    Exits 1 when problems were found (unreadable files, orphan bounds, duplicates, nothing
    to train on), 2 when DATA_DIR is not a dataset (missing, no audio, malformed labels).
    """
    from heardet.data import validate_dataset

    try:
        report = validate_dataset(data_dir, progress=not no_progress)
    except DataError as exc:
        fail(str(exc))
    click.echo(report.render())
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="Output directory (competition layout).")
@click_options(SynthConfig)
@click.option("--calls", type=click.IntRange(min=0), default=0, show_default=True,
              help="Instead of clips: this many stereo call recordings (calls/, events.json).")
@click.option("--minutes", type=click.FloatRange(0.5, 120), default=3.0, show_default=True,
              help="Length of each call (--calls).")
@click.option("--calls-split", type=click.Choice(["train", "test"]), default="test", show_default=True,
              help="Whose voices and sentences the calls use: train (to choose an operating point) or test.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def synth(out: Path, calls: int, minutes: float, calls_split: str, no_progress: bool, **options) -> None:
    """Generate a Russian TTS dataset (espeak-ng, festival and, with --rhvoice-fraction, RHVoice) in the
    competition layout.

    Clips already generated in OUT are kept, so an interrupted run can be resumed. With --calls,
    writes call-like stereo recordings instead (agent left, customer right, 8 kHz telephone band)
    and events.json (where the customer says the phrase).
    """
    from heardet.data import validate_dataset
    from heardet.synth import synthesize

    if calls:
        from heardet.synth.calls import make_calls

        try:
            made = make_calls(out, calls, minutes, calls_split, config=from_options(SynthConfig, options),
                              progress=not no_progress)
        except (ValueError, RuntimeError) as exc:
            fail(str(exc))
        click.echo(f"{made.n_calls} calls ({made.with_phrase} with the phrase, {made.hours:.2f} h) in {out}, "
                   f"{made.seconds:.1f} s")
        return
    try:
        result = synthesize(out, from_options(SynthConfig, options), progress=not no_progress)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    click.echo(
        f"generated {result.n_generated} clips, kept {result.n_skipped} existing, in {result.seconds:.1f} s"
    )
    click.echo(validate_dataset(out, progress=not no_progress).render())


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", default="whisper-base", show_default=True, help="Whisper name, HF id or local dir.")
@click.option("--backend", type=click.Choice(["auto", "faster-whisper", "transformers"]), default="auto",
              show_default=True)
@click.option("--language", default="ru", show_default=True)
@click.option("--beam-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--temperature-fallback", is_flag=True, help="Re-decode hard windows at higher temperature.")
@click.option("--word-timestamps", is_flag=True, help="Add per-word times (JSON column).")
@click.option("--window", type=click.Choice(["content", "30s"]), default="content", show_default=True,
              help="faster-whisper: encode a recording of up to 29 s at its own length plus 1 s, or in 30 s windows.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("transcripts.csv"), show_default=True)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the transcript cache.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def transcribe(inputs, model, backend, language, beam_size, temperature_fallback, word_timestamps, window, output,
               no_cache, no_progress) -> None:
    """Transcribe audio files (or every file in directories) to a CSV: id, path, text, error."""
    import json

    import pandas as pd

    from heardet.whisper.asr import DecodeOptions, default_cache, make_transcriber
    from heardet.whisper.hub import ModelUnavailableError

    files = gather_audio(inputs)
    try:
        options = DecodeOptions(language, beam_size, temperature_fallback, word_timestamps, window=window)
        transcriber = make_transcriber(model, backend, options)
    except (ValueError, ModelUnavailableError) as exc:
        fail(str(exc))
    cache = None if no_cache else default_cache()
    start = time.perf_counter()
    results = transcriber.transcribe(files, cache=cache, progress=not no_progress)
    seconds = time.perf_counter() - start
    rows = {
        "id": [f.stem for f in files], "path": [str(f) for f in files],
        "text": [r.text for r in results], "error": [r.error for r in results],
    }
    if word_timestamps:
        rows["words"] = [json.dumps([w.__dict__ for w in r.transcript.words], ensure_ascii=False)
                         if r.transcript else "[]" for r in results]
    output.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(output, index=False)
    fresh_s = sum(r.transcript.duration_s for r in results if r.transcript and not r.cached)
    cached = sum(r.cached for r in results)
    speed = f"{fresh_s / max(seconds, 1e-9):.1f}× real time over {fresh_s:.0f} s transcribed" if fresh_s else "no audio transcribed"
    click.echo(f"wrote {output}: {len(files)} files, {cached} from cache, {seconds:.1f} s ({speed})")
    sys.exit(report_errors((r.source, r.error) for r in results))


def report_errors(rows) -> int:
    """List the inputs that could not be read, at the end where a person will see them.

    Args:
        rows: (source, error) pairs; those with an empty error are fine.

    Returns:
        The exit status: 1 when an input could not be read, else 0.
    """
    bad = [(source, error) for source, error in rows if error]
    if bad:
        click.echo(f"{len(bad)} unreadable input(s):", err=True)
        for source, error in bad:
            click.echo(f"  {source}: {error}", err=True)
    return EXIT_UNREADABLE if bad else EXIT_OK


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/heardet-catboost/1.")
@click.option("--split", type=click.Choice(["auto", "train", "test"]), default="auto", show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click_options(ScanConfig, only=["threshold", "vad", "mix", "refractory_s", "window_s", "hop_s"])
@click.option("--store-operating-points", is_flag=True,
              help="Calls: record the thresholds for 0.5, 1 and 5 FA/h on the registered model version.")
def evaluate(data_dir, model_uri, split, no_progress, store_operating_points, **scan_options) -> None:
    """Score a labelled DATA_DIR with any heardet model; print macro F1 and the confusion matrix.

    An unreadable clip counts as a wrong prediction, is listed at the end and makes the exit status 1.
    A DATA_DIR of calls (calls/ and events.json, from `heardet synth --calls`) is scanned instead:
    event recall, false accepts per hour, call-level macro F1, median onset error, and the
    thresholds that keep false accepts under 0.5, 1 and 5 per hour on these calls.
    """
    from heardet.mlops.scoring import evaluate_clips, labelled_split
    from heardet.synth.calls import CALLS_DIR, EVENTS_FILE

    if (Path(data_dir) / EVENTS_FILE).is_file():
        files = gather_audio([Path(data_dir) / CALLS_DIR])
        report = evaluate_calls(open_model(model_uri), files, Path(data_dir) / EVENTS_FILE,
                                from_options(ScanConfig, scan_options), progress=not no_progress)
        click.echo(f"{model_uri} on the calls of {data_dir}:")
        click.echo(report.render())
        if store_operating_points:
            from heardet.mlops.registry import store_operating_points as store

            click.echo(store(model_uri, report.operating_points))
        sys.exit(report_errors((r.file, r.error) for r in report.results))

    try:
        split, clips = labelled_split(data_dir, split)  # before the model: a bad directory fails at once
    except DataError as exc:
        fail(str(exc))
    result = evaluate_clips(open_model(model_uri), split, clips, progress=not no_progress)
    click.echo(f"{model_uri} on {data_dir} ({result.split}):")
    click.echo(result.scores.render())
    bad = result.predictions[result.predictions.error != ""]
    sys.exit(report_errors(zip(bad.path, bad.error)))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/heardet-ensemble@production.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("predictions.csv"), show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def predict(inputs, model_uri, output, batch_size, no_progress) -> None:
    """Score audio files (or directories of them); write id,label,score,error to OUTPUT.

    Exits 0 when every file was scored, 1 when some could not be read (listed at the end;
    their rows have label -1), 2 when a path is missing or no audio file was given.
    """
    from heardet.mlops.scoring import predict_files

    files = gather_audio(inputs)  # before the model: loading one takes seconds
    model = open_model(model_uri)
    frame = predict_files(model, files, batch_size, progress=not no_progress)
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["path"]).to_csv(output, index=False)
    bad = frame[frame.error != ""]
    click.echo(f"wrote {output}: {len(frame) - len(bad)} scored, {int((frame.label == 1).sum())} with the phrase")
    sys.exit(report_errors(zip(bad.path, bad.error)))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/heardet-finetune-whisper-base/1.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("events.csv"), show_default=True,
              help="One row per event: file, channel, start_s, end_s, score.")
@click.option("--summary", type=click.Path(path_type=Path), help="Also write one row per file here (CSV).")
@click.option("--target-fah", type=click.FloatRange(min=0, min_open=True),
              help="Use the threshold stored for this many false accepts per hour (heardet evaluate CALLS "
                   "--store-operating-points).")
@click_options(ScanConfig)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def scan(inputs, model_uri, output, summary, target_fah, no_progress, **options) -> None:
    """Find the phrase in whole recordings: events with channel and times, per file.

    A stereo file is scanned per channel (left, right) unless --mix; files are streamed in blocks;
    with --vad (the default) only windows holding speech are scored. Exits 1 when some file could
    not be read (listed at the end; the rest are scanned), 2 on a usage error.
    """
    from heardet.scan import events_frame, files_frame, timed_scan

    files = gather_audio(inputs)
    config = from_options(ScanConfig, options)
    if target_fah is not None:
        if config.threshold is not None:
            fail("give --threshold or --target-fah, not both")
        from heardet.mlops.registry import stored_threshold

        try:
            config = dataclasses.replace(config, threshold=stored_threshold(model_uri, target_fah))
        except DataError as exc:
            fail(str(exc))
    results, seconds = timed_scan(open_model(model_uri), files, config, progress=not no_progress)
    events = events_frame(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    events.to_csv(output, index=False)
    if summary:
        files_frame(results).to_csv(summary, index=False)
    audio = sum(r.duration_s for r in results)
    for r in results:
        if not r.error:
            click.echo(f"{r.file}: {len(r.events)} event(s) in {r.duration_s:.0f} s "
                       f"({', '.join(r.channels)}; speech {r.speech_s:.0f} s, {r.scored}/{r.windows} windows scored)")
        for e in r.events:
            click.echo(f"  {e.channel:>5} {e.start_s:8.2f}-{e.end_s:8.2f} s  score {e.score:.3f}")
    click.echo(f"wrote {output}: {len(events)} events in {len(results)} files, {audio / 3600:.2f} h of audio "
               f"in {seconds:.0f} s ({audio / max(seconds, 1e-9):.0f}× real time)")
    sys.exit(report_errors((r.file, r.error) for r in results))


@main.command()
@click.argument("calls_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_uri", required=True, help="The model whose false alarms to mine.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="Dataset whose wav_train/ gets the mined negatives.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="At most this many windows (the highest-scoring first).")
@click_options(ScanConfig, only=["vad", "window_s", "hop_s"])
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def mine(calls_dir, model_uri, data_dir, threshold, limit, no_progress, **scan_options) -> None:
    """Add a model's false alarms on CALLS_DIR to DATA's training clips, as hard negatives.

    CALLS_DIR comes from `heardet synth --calls N --calls-split train` (training voices: keep the
    calls that choose operating points and the test calls apart). Every window scoring at least
    --threshold that overlaps no phrase of events.json becomes a label-0 clip; retrain afterwards.
    """
    from heardet.data import TRAIN_DIR
    from heardet.scan import false_alarms, timed_scan
    from heardet.synth.calls import CALLS_DIR, EVENTS_FILE, mine_negatives, read_events

    if not (Path(calls_dir) / EVENTS_FILE).is_file():
        fail(f"{calls_dir} has no {EVENTS_FILE}: mining needs calls whose phrases are known (heardet synth --calls)")
    if not (Path(data_dir) / TRAIN_DIR).is_dir():
        fail(f"{data_dir}/{TRAIN_DIR} does not exist: give the dataset the mined clips should join")
    files = gather_audio([Path(calls_dir) / CALLS_DIR])
    config = from_options(ScanConfig, scan_options, threshold=threshold)
    results, _ = timed_scan(open_model(model_uri), files, config, progress=not no_progress)
    windows = false_alarms(results, read_events(Path(calls_dir) / EVENTS_FILE), threshold)
    added = mine_negatives(calls_dir, windows, data_dir, limit)
    click.echo(f"{len(windows)} false-alarm windows at threshold {threshold:g}; added {len(added)} to "
               f"{data_dir}/{TRAIN_DIR} (kind 'mined' in manifest.jsonl)")
    sys.exit(report_errors((r.file, r.error) for r in results))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=Path("-"), show_default=True, help="Where to write the body ('-': standard output).")
def request(inputs, output) -> None:
    """Write the JSON body that scores audio files (or directories of them) on a served model.

    For `mlflow models serve`: one base64 `audio` row per file, in `dataframe_split` form,
    sent with `curl --data-binary @body.json` (a body of any size; on the command line
    base64 soon exceeds the argument limit).
    """
    from heardet.files import atomic_write_text
    from heardet.mlops.serving import request_body

    files = gather_audio(inputs)
    try:
        body = request_body(files)
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    if str(output) == "-":
        click.echo(body)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, body + "\n")
    click.echo(f"wrote {output}: {len(files)} file(s), {len(body)} bytes", err=True)


@main.command()
@click.argument("csvs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Blended id,label CSV.")
def blend(csvs, output) -> None:
    """Majority-vote submission CSVs (id,label) into OUTPUT; ties go to 1. Ids must match."""
    from heardet.approaches.ensemble import blend_csvs

    try:
        blended = blend_csvs(csvs)
    except ValueError as exc:
        fail(str(exc))
    output.parent.mkdir(parents=True, exist_ok=True)
    blended.to_csv(output, index=False)
    click.echo(f"wrote {output}: {len(blended)} rows, {int(blended.label.sum())} with the phrase")


@main.group()
def stack() -> None:
    """A team tracking stack on this machine: PostgreSQL and mlflow server, on 127.0.0.1."""


root_option = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path(".stack"),
                           show_default=True, help="The stack's folder (PostgreSQL data, artifacts, logs).")


@stack.command("start")
@root_option
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True,
              help="The tracking server's port (0: a free one).")
def stack_start(root: Path, port: int) -> None:
    """Start the stack (or find it running) and print the variables to export."""
    from heardet.mlops import stack as team

    try:
        running = team.start(root, port)
    except team.StackError as exc:
        fail(str(exc))
    click.echo(running.exports())


@stack.command("stop")
@root_option
def stack_stop(root: Path) -> None:
    """Stop the tracking server and PostgreSQL; their data stay for the next start."""
    from heardet.mlops import stack as team

    try:
        click.echo(f"stopped the stack in {root}" if team.stop(root) else f"no stack was running in {root}")
    except team.StackError as exc:
        fail(str(exc))


@stack.command("status")
@root_option
def stack_status(root: Path) -> None:
    """Print the running stack's variables; exit 1 when none runs."""
    from heardet.mlops import stack as team

    running = team.status(root)
    if running is None:
        click.echo(f"no stack is running in {root}")
        sys.exit(1)
    click.echo(running.exports())


if __name__ == "__main__":
    main()
