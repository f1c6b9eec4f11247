"""Spark batch scoring against `heardet predict`, side by side on the same files: rows/s, and
whether the labels agree.

Scores every audio file in DIR with MODEL_URI twice: through heardet's own batch scoring (what
`heardet predict` runs: the pyfunc loaded once, batches of 16 paths) and through
`mlflow.pyfunc.spark_udf` on a local Spark session (`local[N]`, paths in a DataFrame, the
README's snippet). Spark's time includes the UDF's model load in its Python workers, not the
session start; each side is timed once, after a warm-up call.

    python benchmarks/spark_scoring.py models:/heardet-finetune-whisper-base/1 data/wav_test --cores 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_uri")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--cores", type=int, default=2, help="Spark's local[N]")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/spark_scoring.json"))
    args = parser.parse_args()
    files = sorted(p for p in args.directory.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))
    if not files:
        parser.error(f"{args.directory} holds no audio files")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    import mlflow
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import struct

    from heardet.mlops.scoring import load_model, predict_files

    model = load_model(args.model_uri)
    predict_files(model, files[:2], progress=False)
    started = time.perf_counter()
    local = predict_files(model, files, progress=False)
    local_s = time.perf_counter() - started

    spark = SparkSession.builder.master(f"local[{args.cores}]").getOrCreate()
    try:
        score = mlflow.pyfunc.spark_udf(spark, args.model_uri, env_manager="local",
                                        result_type="label long, score double, error string")
        frame = spark.createDataFrame([(str(f),) for f in files], ["path"]).repartition(args.cores)
        frame.limit(2).select(score(struct("path"))).collect()
        started = time.perf_counter()
        scored = (spark.createDataFrame([(str(f),) for f in files], ["path"])
                  .select("path", score(struct("path")).alias("out")).select("path", "out.*").toPandas())
        spark_s = time.perf_counter() - started
    finally:
        spark.stop()
    scored = scored.set_index("path").loc[[str(f) for f in files]]
    agree = int((scored.label.to_numpy() == local.label.to_numpy()).sum())
    result = {"model_uri": args.model_uri, "files": len(files), "heardet_predict_s": round(local_s, 2),
              "heardet_predict_rows_per_s": round(len(files) / local_s, 2), "spark_s": round(spark_s, 2),
              "spark_rows_per_s": round(len(files) / spark_s, 2), "spark_cores": args.cores,
              "labels_agree": f"{agree}/{len(files)}",
              "machine": f"{psutil.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
                         f"{platform.machine()}",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
